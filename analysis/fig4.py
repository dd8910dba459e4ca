"""Figure 4: CDFs of the normalized loss of positive and negative samples of a converged model, gamma in
{0, .5, 1, 2}; x = fraction of samples sorted from lowest to highest loss. The sample counts are on the figure.

CLI: ``python -m analysis.fig4 --study study.json --out fig4.png fig4.pdf``  (uses ``figures.fig4.samples``, or
                                                                           an exported study's ``summary``)
     ``python -m analysis.fig4 --samples samples.npz --out fig4.png``        (a samples file directly)
"""

from __future__ import annotations

import sys
from pathlib import Path

from matplotlib.figure import Figure

from analysis.errors import AnalysisInputError
from analysis.fig4_data import FIG4_GAMMAS
from analysis.fig4_summary import Fig4Data, load_fig4
from analysis.plotting import PAPER_COLORS, new_figure
from analysis.study_io import Study, load_loss_samples, load_study


def study_data(study: Study) -> Fig4Data:
    """The study's Figure 4 data (:func:`analysis.fig4_summary.load_fig4`); AnalysisInputError when it has none."""
    data = load_fig4(study)
    if data is None:
        raise AnalysisInputError(f"{study.path}: figures.fig4 needs a 'samples' (or exported 'summary') path")
    return data


def make_figure(samples: Fig4Data, run: str = "") -> Figure:
    curves = samples.cdf_curves()
    fig, axes = new_figure(ncols=2, width=4.2, height=3.6)
    for ax, which, title in ((axes[0], "pos", "positive samples"), (axes[1], "neg", "negative samples")):
        for gamma, color in zip(FIG4_GAMMAS, PAPER_COLORS):
            ax.plot(curves["x"], curves[which][gamma], color=color, label=f"γ = {gamma:g}")
        n = samples.num_pos if which == "pos" else samples.num_neg
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="fraction of " + ("foreground" if which == "pos" else "background")
               + " examples", ylabel="cumulative normalized loss", title=f"{title} (n = {n:,})")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Figure 4: loss CDFs of a converged model{f' ({run})' if run else ''}\n"
                 f"{samples.describe()} (paper: ~10^5 positive, ~10^7 negative)", fontsize=9)
    return fig


def main(argv: list[str] | None = None) -> int:
    import argparse

    from analysis.cli import run_cli
    from analysis.outputs import save_figure

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--study", help="study manifest; uses figures.fig4.samples (or .summary)")
    src.add_argument("--samples", help="a loss-samples .npz")
    parser.add_argument("--out", nargs="+", required=True, help="output files (.png, .pdf)")

    def run(args) -> None:
        if args.study:
            study = load_study(args.study)
            data, run_name = study_data(study), study.figure("fig4").get("run", "")
        else:
            data, run_name = load_loss_samples(Path(args.samples)), ""
        save_figure(make_figure(data, run_name), args.out)

    return run_cli(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
