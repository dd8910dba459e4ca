"""Figure 7: FL* (eq. 7-8) loss curves for a gamma x beta grid, blue where the setting was *effective*.

Effective (the paper's rule, Appendix A): the model converged (no seed diverged) and its mean AP is over a
threshold. The paper's threshold is 33.5 AP (FL gamma 2 reached 34.0, so 0.5 AP or 1.5% below FL). At scales other
than ``paper`` absolute AP differs, so the threshold is relative to our FL gamma 2 model (Table 3's
``loss=FL,gamma=2`` row): mean_FL x 33.5 / 34.0 - 2 x its seed std (the std term needs at least 2 seeds).

CLI: ``python -m analysis.fig7 --study study.json --out fig7.png fig7.pdf [--threshold AP]``
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure

from analysis.analytic import LossSpec, loss_vs_xt
from analysis.errors import AnalysisInputError
from analysis.fig5 import X_RANGE
from analysis.plotting import EFFECTIVE, INEFFECTIVE, new_figure
from analysis.seeds import SeedValues, seed_values
from analysis.study_io import Study, load_entry, load_study, load_table

PAPER_THRESHOLD = 33.5
PAPER_FL_AP = 34.0
FL_KEY = "loss=FL,gamma=2"


@dataclass(frozen=True)
class Setting:
    gamma: float
    beta: float
    ap: SeedValues


def threshold(scale: str, fl: SeedValues | None) -> tuple[float, str]:
    """``(threshold AP, explanation)`` by the rule in the module docstring."""
    if scale == "paper":
        return PAPER_THRESHOLD, f"{PAPER_THRESHOLD} AP (the paper's threshold)"
    if fl is None or not math.isfinite(fl.mean):
        raise AnalysisInputError(f"Figure 7 at scale {scale!r} needs Table 3's {FL_KEY!r} runs for its threshold "
                                 f"(or pass --threshold)")
    spread = 2.0 * fl.std if fl.n >= 2 else 0.0
    value = fl.mean * PAPER_THRESHOLD / PAPER_FL_AP - spread
    return value, (f"{value:.2f} AP = our FL γ=2 mean {fl.mean:.2f} × {PAPER_THRESHOLD}/{PAPER_FL_AP}"
                   + (f" − 2 × seed std {fl.std:.2f}" if spread else " (one seed: no std term)")
                   + f" (scale {scale}: the paper's 33.5 AP is not comparable here)")


def effective(s: Setting, thr: float) -> bool:
    """Converged (no seed diverged) and mean AP over the threshold."""
    return s.ap.n_diverged == 0 and math.isfinite(s.ap.mean) and s.ap.mean > thr


def load_settings(study: Study) -> list[Setting]:
    entries = study.figure("fig7")
    if not isinstance(entries, list) or not entries:
        raise AnalysisInputError(f"{study.path}: figures.fig7 must be a non-empty list of gamma/beta runs")
    out = []
    for i, e in enumerate(entries):
        if not all(isinstance(e.get(k), (int, float)) for k in ("gamma", "beta")):
            raise AnalysisInputError(f"{study.path}: figures.fig7[{i}] needs numeric 'gamma' and 'beta'")
        out.append(Setting(float(e["gamma"]), float(e["beta"]),
                           seed_values(load_entry(study, e, f"figures.fig7[{i}]"), "AP")))
    return out


def fl_reference(study: Study) -> SeedValues | None:
    by_seed = load_table(study, "3").get(FL_KEY)
    return seed_values(by_seed, "AP") if by_seed else None


def make_figure(settings: list[Setting], thr: float, thr_text: str) -> Figure:
    x_t = torch.linspace(*X_RANGE, 1001, dtype=torch.float64)
    fig, (ax,) = new_figure(width=5.5, height=4.2)
    n_eff = 0
    for s in sorted(settings, key=lambda s: effective(s, thr)):  # effective curves drawn on top
        ok = effective(s, thr)
        n_eff += ok
        ax.plot(x_t.numpy(), loss_vs_xt(LossSpec("FL*", s.gamma, s.beta), x_t).numpy(),
                color=EFFECTIVE if ok else INEFFECTIVE, alpha=0.8, lw=1.2)
    ax.plot([], [], color=EFFECTIVE, label=f"effective ({n_eff})")
    ax.plot([], [], color=INEFFECTIVE, label=f"diverged or AP ≤ threshold ({len(settings) - n_eff})")
    ax.set(xlim=X_RANGE, ylim=(0, 5), xlabel="$x_t$", ylabel="loss",
           title="Figure 7: FL* for various γ, β")
    ax.legend(fontsize=8)
    fig.text(0.01, -0.02, "threshold: " + thr_text, fontsize=7, ha="left", va="top", wrap=True)
    return fig


def main(argv: list[str] | None = None) -> int:
    import argparse

    from analysis.cli import run_cli
    from analysis.outputs import save_figure

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="study manifest; uses figures.fig7 and Table 3's FL row")
    parser.add_argument("--out", nargs="+", required=True, help="output files (.png, .pdf)")
    parser.add_argument("--threshold", type=float, default=None, help="AP threshold (overrides the rule)")

    def run(args) -> None:
        study = load_study(args.study)
        settings = load_settings(study)
        if args.threshold is not None:
            thr, text = args.threshold, f"{args.threshold} AP (given on the command line)"
        else:
            thr, text = threshold(study.scale, fl_reference(study))
        save_figure(make_figure(settings, thr, text), args.out)

    return run_cli(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
