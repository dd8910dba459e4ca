"""This study's addition (issue 18), not in the paper: FL against alpha-CE across the positive rate per
classification output. Its table, figures and report section, from the manifest ``work/<scale>/regime/regime.json``
(``workflow/regime.py``) and the files it names (metrics per seed, snapshot metrics, anchor statistics).

CLI (one output per call, as the Snakemake rules call it)::

    python -m analysis.regime table   --regime regime.json --out table_imbalance.csv table_imbalance.md
    python -m analysis.regime figure  --regime regime.json --out fig_imbalance.png fig_imbalance.pdf
    python -m analysis.regime curves  --regime regime.json --out fig_imbalance_curves.png ...pdf
    python -m analysis.regime section --regime regime.json --out regime.md --table table_imbalance.md
                                      --figure fig_imbalance.png --curves fig_imbalance_curves.png
    each with [--coco-anchor-stats FILE]: COCO's rate measured with anchor-stats (else the published one)

- table: one row per rate: the target and the measured rate per output (beside COCO's), K, objects per image, AP
  (mean ± std over seeds, and each seed) of each arm, and AP(FL) - AP(best CE) with its standard error;
- figure: AP of each arm (left) and AP(FL) - AP(best CE) (right) against the measured rate, log x, COCO's rate
  marked;
- curves: AP against the iteration of every arm at the mildest and at the most extreme rate (snapshots);
- section: the report's section "This study's addition (not in the paper)", which REPORT.md includes once it
  exists.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from analysis.errors import AnalysisInputError
from analysis.imbalance import Rate, beside_coco, coco_rate, load_rate
from analysis.plotting import PAPER_COLORS, new_figure
from analysis.seeds import SeedValues, seed_values
from analysis.study_io import read_json, read_metrics
from analysis.verdict import Comparison, Outcome, compare

TITLE = "This study's addition (not in the paper): FL against CE across the imbalance"
CSV_FIELDS = ("rate_tag", "target_rate", "measured_rate", "config_measured_rate", "times_coco", "num_classes",
              "image_size", "objects_per_image", "arm", "label", "prior", "n_seeds", "seeds", "ap_mean", "ap_std",
              "best_ce", "fl_minus_best_ce", "fl_minus_best_ce_se", "fl_vs_best_ce")


@dataclass(frozen=True)
class RateResult:
    """One rate of the experiment: its data, the measured rate, AP per arm over seeds, and the curves."""

    tag: str
    target: float
    measured: Rate
    config_measured: float
    num_classes: int
    image_size: int
    objects_per_image: float
    labels: dict[str, str]
    priors: dict[str, float]
    ap: dict[str, SeedValues]
    curves: dict[str, dict[int, SeedValues]]
    ce_arms: tuple[str, ...]

    @property
    def best_ce(self) -> str:
        """The CE arm with the higher mean AP."""
        return max(self.ce_arms, key=lambda k: self.ap[k].mean if math.isfinite(self.ap[k].mean) else -math.inf)

    @property
    def delta(self) -> float:
        """AP(FL) - AP(best CE), means over seeds."""
        return self.ap["fl"].mean - self.ap[self.best_ce].mean

    @property
    def ratio(self) -> float:
        """AP(FL) / AP(best CE), means over seeds; nan where the best CE arm's AP is not above 0. Free of the fall of
        every arm's AP with the rate, which shrinks :attr:`delta` by itself."""
        best = self.ap[self.best_ce].mean
        return self.ap["fl"].mean / best if best > 0 else math.nan

    @property
    def delta_se(self) -> float:
        """Standard error of :attr:`delta`: sqrt(s_FL^2 / n_FL + s_CE^2 / n_CE); NaN with one seed."""
        fl, ce = self.ap["fl"], self.ap[self.best_ce]
        return math.sqrt(fl.std**2 / fl.n + ce.std**2 / ce.n)


def _path(regime_path: Path, p: str) -> Path:
    """A manifest path: relative to the working directory where it exists, else to the manifest's folder."""
    path = Path(p)
    if path.is_absolute() or path.exists():
        return path
    alt = regime_path.parent / path
    return alt if alt.exists() else path


def _seeds(regime_path: Path, paths: dict[str, str]) -> SeedValues:
    return seed_values({s: read_metrics(_path(regime_path, p)) for s, p in paths.items()}, "AP")


def load_results(regime_path: str | Path) -> list[RateResult]:
    """Every rate of the manifest with its measured rate and APs, mildest first; AnalysisInputError naming the
    file for anything missing or malformed."""
    regime_path = Path(regime_path)
    data = read_json(regime_path, "regime manifest")
    if not isinstance(data, dict) or not isinstance(data.get("rates"), list) or len(data["rates"]) < 2:
        raise AnalysisInputError(f"{regime_path}: regime manifest needs a list 'rates' of at least 2 entries")
    out = []
    for entry in data["rates"]:
        try:
            stats = _path(regime_path, entry["anchor_stats"])
            arms = entry["arms"]
            curves = {key: {} for key in arms}
            for key, arm in arms.items():
                its = sorted({int(i) for by_it in arm["curve"].values() for i in by_it})
                for it in its:
                    curves[key][it] = _seeds(regime_path, {s: by_it[str(it)] for s, by_it in arm["curve"].items()})
            stats_json = read_json(stats, "anchor statistics")
            out.append(RateResult(
                tag=entry["tag"], target=float(entry["rate"]), measured=load_rate(stats),
                config_measured=float(entry["measured"]), num_classes=int(entry["num_classes"]),
                image_size=int(entry["image_size"]), objects_per_image=float(stats_json["objects_per_image"]),
                labels={k: a["label"] for k, a in arms.items()}, priors={k: float(a["prior"]) for k, a in arms.items()},
                ap={k: _seeds(regime_path, a["metrics"]) for k, a in arms.items()}, curves=curves,
                ce_arms=tuple(data.get("ce_arms", [k for k in arms if k != "fl"]))))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, AnalysisInputError):
                raise
            raise AnalysisInputError(f"{regime_path}: rate {entry.get('tag', '?')!r}: malformed entry ({exc!r})") \
                from None
    return sorted(out, key=lambda r: -r.measured.value)


def _ratio(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else "-"


def _signed(x: float, se: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:+.1f}" + (f" ± {se:.1f}" if math.isfinite(se) else "")


def csv_text(results: list[RateResult], coco: Rate) -> str:
    """Long CSV: one row per (rate, arm)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        for key, ap in r.ap.items():
            writer.writerow({
                "rate_tag": r.tag, "target_rate": r.target, "measured_rate": r.measured.value,
                "config_measured_rate": r.config_measured, "times_coco": r.measured.value / coco.value,
                "num_classes": r.num_classes, "image_size": r.image_size,
                "objects_per_image": round(r.objects_per_image, 3), "arm": key, "label": r.labels[key],
                "prior": r.priors[key], "n_seeds": ap.n, "seeds": ap.format_seeds(2),
                "ap_mean": ap.mean, "ap_std": ap.std, "best_ce": key == r.best_ce,
                "fl_minus_best_ce": r.delta, "fl_minus_best_ce_se": r.delta_se,
                "fl_vs_best_ce": outcome(r).outcome.value})
    return buf.getvalue()


def markdown(results: list[RateResult], coco: Rate) -> str:
    """One row per rate, mildest first; AP mean ± std over seeds with each seed's value."""
    arms = list(results[0].ap)
    head = ["positive rate per output (measured; target)", "K", "objects / image"]
    head += [results[0].labels[k] for k in arms] + ["FL - best CE (± s.e.)"]
    lines = [f"### Table imbalance: {TITLE.split(': ', 1)[1]}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [f"{beside_coco(r.measured, coco)}; target {r.target:.0e}", str(r.num_classes),
                 f"{r.objects_per_image:.2f}"]
        for k in arms:
            ap = r.ap[k]
            mark = "**" if k == r.best_ce else ""
            cells.append(f"{mark}{ap.format(1)}{mark} ({ap.format_seeds(1)})")
        cells.append(f"{_signed(r.delta, r.delta_se)} (vs {r.labels[r.best_ce]})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"AP in percent on each variant's validation split; the best CE arm in bold. COCO's rate: "
                  f"{coco.format()} ({coco.what}). The prior arm's π is the rate measured before the run "
                  f"(`measured` in the scale config; within "
                  f"{max(abs(r.config_measured / r.measured.value - 1) for r in results):.0%} of the table's)."]
    return "\n".join(lines) + "\n"


def figure(results: list[RateResult], coco: Rate):
    """AP of each arm (left) and AP(FL) - AP(best CE) (right) against the measured rate, log x."""
    fig, (ax_ap, ax_d) = new_figure(ncols=2, width=4.6, height=3.4)
    x = [r.measured.value for r in results]
    for i, key in enumerate(results[0].ap):
        means = [r.ap[key].mean for r in results]
        sds = [r.ap[key].std if math.isfinite(r.ap[key].std) else 0.0 for r in results]
        ax_ap.errorbar(x, means, yerr=sds, marker="o", capsize=3, color=PAPER_COLORS[i], label=results[0].labels[key])
    ax_d.errorbar(x, [r.delta for r in results],
                  yerr=[r.delta_se if math.isfinite(r.delta_se) else 0.0 for r in results],
                  marker="o", capsize=3, color="black")
    ax_d.axhline(0.0, color="grey", lw=1)
    for ax in (ax_ap, ax_d):
        ax.set_xscale("log")
        ax.axvline(coco.value, color=PAPER_COLORS[3], ls="--", lw=1,
                   label=f"COCO ~{coco.format()} ({'published' if coco.published else 'measured'})")
        ax.invert_xaxis()  # from mild (left) to extreme (right) imbalance
        ax.set_xlabel("positive rate per classification output")
    ax_ap.set(ylabel="AP (%)", title="AP per arm (mean ± std over seeds)")
    ax_d.set(ylabel="AP(FL) - AP(best CE)", title="FL - best CE (± s.e.)")
    ax_ap.legend(fontsize=7)
    fig.suptitle("This study's addition (not in the paper)", fontsize=9)
    return fig


def curves_figure(results: list[RateResult]):
    """AP against the iteration of every arm at the mildest and at the most extreme rate: mean over seeds (line)
    and each seed (dots)."""
    ends = [r for r in (results[0], results[-1]) if any(r.curves.values())]
    if len(ends) < 2:
        raise AnalysisInputError("regime manifest: the mildest and the most extreme rate need snapshot curves")
    fig, axes = new_figure(ncols=2, width=4.4, height=3.3)
    for ax, r in zip(axes, ends):
        for i, (key, by_it) in enumerate(r.curves.items()):
            its = sorted(by_it)
            ax.plot(its, [by_it[it].mean for it in its], marker="o", color=PAPER_COLORS[i], label=r.labels[key])
            for it in its:
                ax.scatter([it] * by_it[it].n, by_it[it].values, s=8, color=PAPER_COLORS[i], alpha=0.4)
        ax.set(xlabel="iteration", ylabel="AP (%)", title=f"rate {r.measured.format()} (K = {r.num_classes})")
        ax.legend(fontsize=7)
    fig.suptitle("This study's addition (not in the paper): AP during training", fontsize=9)
    return fig


def outcome(r: RateResult) -> Comparison:
    """FL against the best CE arm at one rate, by the report's verdict rule (analysis/verdict.py: a difference
    counts beyond 2 pooled seed std with >= 2 seeds a side)."""
    return compare(r.ap["fl"].values, r.ap[r.best_ce].values)


def crossing(results: list[RateResult]) -> float | None:
    """The positive rate where AP(FL) - AP(best CE) first changes sign from the mildest rate on, interpolated
    linearly in log rate between the two measured rates around it; None where it keeps one sign."""
    for a, b in zip(results, results[1:]):
        if a.delta == 0.0:
            return a.measured.value
        if a.delta * b.delta <= 0.0:
            t = a.delta / (a.delta - b.delta)
            la, lb = math.log10(a.measured.value), math.log10(b.measured.value)
            return 10 ** (la + t * (lb - la))
    return None


_WORDS = {Outcome.GREATER: "FL ahead", Outcome.LESS: "CE ahead", Outcome.EQUAL: "equal within seed noise",
          Outcome.INCONCLUSIVE: "one seed: inconclusive"}


def reading(results: list[RateResult]) -> str:
    """What the table says, in one paragraph computed from it: per rate FL - best CE and its outcome by the
    report's verdict rule, the trend from the mildest to the most extreme rate, where the difference crosses
    zero, and per rate AP(FL) / AP(best CE)."""
    parts = [f"{_signed(r.delta, r.delta_se)} AP at {r.measured.format()} ({_WORDS[outcome(r).outcome]})"
             for r in results]
    mild, extreme = results[0], results[-1]
    trend = "grows" if extreme.delta > mild.delta else "shrinks"
    cross = crossing(results)
    where = (f"It crosses zero near {cross:.1e} (interpolated in log rate)" if cross is not None else
             f"It keeps its sign ({'FL' if mild.delta > 0 else 'CE'} ahead on average) from "
             f"{mild.measured.format()} to {extreme.measured.format()}")
    return (f"AP(FL) - AP(best CE) (± its standard error; outcome by the report's verdict rule): {'; '.join(parts)}. "
            f"From the mildest to the most extreme rate the difference {trend} by "
            f"{abs(extreme.delta - mild.delta):.1f} AP in FL's {'favour' if trend == 'grows' else 'disfavour'}. "
            f"{where}. The paper's thesis predicts it to grow in FL's favour as the rate falls towards COCO's. "
            f"AP(FL) / AP(best CE), mildest first: {', '.join(_ratio(r.ratio) for r in results)}: a difference also "
            f"shrinks when every arm's AP falls, the ratio rises only where FL gains on CE.")


def section(results: list[RateResult], coco: Rate, table_md: str, figures: dict[str, str]) -> str:
    """The report section (Markdown; figure links as given, relative to the report's folder)."""
    lines = [f"## {TITLE}", "",
             "Not a table or figure of the paper: issue 18's test of its thesis (sections 1 and 3) that the extreme "
             "foreground-background imbalance of dense detectors is what makes cross entropy fail and what the "
             "focal loss fixes. Each rate is a dataset variant of the embedded generator (`make-dataset --classes "
             "--objects`, docs/dataset.md) whose positive rate per classification output (foreground anchors / "
             "(anchors x K), `anchor-stats`) goes from this scale's towards COCO's; each arm trains with the "
             "scale's base settings: FL (γ 2, α .25), α-CE (α .75) with the paper's prior π = .01, and α-CE with π "
             "= the measured rate (Chen et al.'s optimal bias initialization). The number of classes K grows with "
             "the imbalance, as from this scale to COCO, so each class has fewer training objects at the extreme "
             "rates.", "", reading(results), "", table_md]
    for name, path in figures.items():
        lines += [f"![{name}]({path})", ""]
    return "\n".join(lines)


def claim_note(table_csv: str | Path) -> str:
    """One sentence for the claims C3 and C4 from ``table_imbalance.csv`` (what results/<scale> commits): FL - best
    CE at each rate with its outcome by the verdict rule and the rate beside COCO's, mildest first."""
    path = Path(table_csv)
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
        per_rate = {}
        for row in rows:
            per_rate.setdefault(row["rate_tag"], row)
        parts = [f"{_signed(float(r['fl_minus_best_ce']), float(r['fl_minus_best_ce_se']))} AP at "
                 f"{float(r['measured_rate']):.1e} ({float(r['times_coco']):.0f}x COCO's rate; "
                 f"{_WORDS[Outcome(r['fl_vs_best_ce'])]})"
                 for r in sorted(per_rate.values(), key=lambda r: -float(r["measured_rate"]))]
    except (OSError, KeyError, ValueError) as exc:
        raise AnalysisInputError(f"{path}: not a regime table ({exc!r})") from None
    if not parts:
        raise AnalysisInputError(f"{path}: regime table has no rows")
    return f"The regime experiment (this study's addition, below): FL - best CE {'; '.join(parts)}."


def main(argv: list[str] | None = None) -> int:
    from analysis.cli import run_cli
    from analysis.outputs import save_figure
    from retinanet.atomic import write_text

    parser = argparse.ArgumentParser(prog="python -m analysis.regime", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("table", "figure", "curves", "section"))
    parser.add_argument("--regime", required=True, help="work/<scale>/regime/regime.json")
    parser.add_argument("--out", nargs="+", required=True, help="output files (.csv .md / .png .pdf / .md)")
    parser.add_argument("--coco-anchor-stats", default=None, help="anchor-stats of COCO (default: published rate)")
    parser.add_argument("--table", help="section: the table's Markdown file")
    parser.add_argument("--figure", help="section: fig_imbalance's PNG")
    parser.add_argument("--curves", help="section: fig_imbalance_curves' PNG")

    def run(args: argparse.Namespace) -> None:
        results, coco = load_results(args.regime), coco_rate(args.coco_anchor_stats)
        if args.what == "table":
            for out in args.out:
                write_text(out, csv_text(results, coco) if out.endswith(".csv") else markdown(results, coco))
        elif args.what in ("figure", "curves"):
            save_figure(figure(results, coco) if args.what == "figure" else curves_figure(results), args.out)
        else:
            if not (args.table and args.figure and args.curves):
                raise ValueError("section needs --table, --figure and --curves")
            folder = Path(args.out[0]).parent
            links = {Path(f).stem: Path(os.path.relpath(f, folder)).as_posix() for f in (args.figure, args.curves)}
            table_md = Path(args.table).read_text(encoding="utf-8")
            write_text(args.out[0], section(results, coco, table_md, links))

    return run_cli(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
