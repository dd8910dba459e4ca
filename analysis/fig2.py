"""Figure 2: AP against inference time. Left: our Table 1e runs (one curve per depth, points labelled by scale;
mean over seeds with the seed std as error bars). Right: the paper's Table 1e curves and the published detectors
of Figure 2's inset (ms on an Nvidia M40, COCO test-dev). The panels are separate because neither the hardware nor,
below paper scale, the data are comparable.

CLI: ``python -m analysis.fig2 --study study.json --out fig2.png fig2.pdf``  (Table 1e entries with timing)
"""

from __future__ import annotations

import math
import sys

from matplotlib.figure import Figure

from analysis.keys import parse_key
from analysis.paper_values import PAPER_VALUES, PaperValues, load_paper_values
from analysis.plotting import PAPER_COLORS, new_figure
from analysis.seeds import SeedValues, seed_values
from analysis.study_io import load_study, load_table

MARKERS = {50: "o", 101: "D"}


def curves_by_depth(table: dict[str, dict[str, dict]]) -> dict[int, list[tuple[int, SeedValues, SeedValues]]]:
    """``{depth: [(scale, AP, ms), ...] sorted by scale}`` from ``{key: {seed: metrics}}`` of Table 1e."""
    out: dict[int, list] = {}
    for key, by_seed in table.items():
        k = parse_key(key)
        out.setdefault(int(k["depth"]), []).append((int(k["scale"]), seed_values(by_seed, "AP"),
                                                    seed_values(by_seed, "time")))
    return {d: sorted(v, key=lambda t: t[0]) for d, v in sorted(out.items())}


def make_figure(ours: dict[int, list], paper: PaperValues, scale: str, device: str = "") -> Figure:
    fig, (ax_ours, ax_paper) = new_figure(ncols=2, width=4.8, height=4.0)
    for (depth, pts), color in zip(ours.items(), PAPER_COLORS):
        xs = [t.mean for _, _, t in pts]
        ys = [a.mean for _, a, _ in pts]
        err = [a.std if math.isfinite(a.std) else 0.0 for _, a, _ in pts]
        ax_ours.errorbar(xs, ys, yerr=err, color=color, marker=MARKERS.get(depth, "s"), capsize=2,
                         label=f"RetinaNet-{depth} (ours)")
        for (s, _, _), x, y in zip(pts, xs, ys):
            ax_ours.annotate(str(s), (x, y), textcoords="offset points", xytext=(3, -9), fontsize=7)
    ax_ours.set(xlabel=f"inference time (ms per image{', ' + device if device else ''})", ylabel="AP",
                title=f"ours (scale {scale})")
    ax_ours.legend(fontsize=8)
    t1e = paper.tables["1e"]
    for depth, color in zip((50, 101), PAPER_COLORS):
        rows = sorted((r for r in t1e.rows if r.extra["depth"] == depth), key=lambda r: r.extra["scale"])
        ax_paper.plot([r.values["time"] for r in rows], [r.values["AP"] for r in rows], color=color,
                      marker=MARKERS[depth], label=f"RetinaNet-{depth} (Table 1e)")
    others = [p for p in paper.fig2_points if p.extra.get("plotted") and not p.key.startswith("RetinaNet")]
    ax_paper.scatter([p.values["time"] for p in others], [p.values["AP"] for p in others], color="black",
                     marker="x", label="published detectors")
    for p in others:
        ax_paper.annotate(f"[{p.extra['label']}] {p.key}", (p.values["time"], p.values["AP"]),
                          textcoords="offset points", xytext=(4, -3), fontsize=7)
    ax_paper.set(xlabel="inference time (ms, Nvidia M40)", ylabel="COCO test-dev AP",
                 title="paper (Figure 2 and Table 1e)")
    ax_paper.legend(fontsize=8, loc="lower right")
    fig.suptitle("Figure 2: speed versus accuracy", fontsize=10)
    return fig


def main(argv: list[str] | None = None) -> int:
    import argparse

    from analysis.cli import run_cli
    from analysis.outputs import save_figure

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="study manifest; uses Table 1e entries with timing")
    parser.add_argument("--out", nargs="+", required=True, help="output files (.png, .pdf)")
    parser.add_argument("--paper-values", default=str(PAPER_VALUES))

    def run(args) -> None:
        study = load_study(args.study)
        table_id = (study.figure("fig2") or {}).get("table", "1e")
        table = load_table(study, table_id)
        devices = sorted({m.get("device", "") for by_seed in table.values() for m in by_seed.values()} - {""})
        fig = make_figure(curves_by_depth(table), load_paper_values(args.paper_values), study.scale,
                          " / ".join(devices))
        save_figure(fig, args.out)

    return run_cli(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
