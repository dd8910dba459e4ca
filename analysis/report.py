"""``results/<scale>/REPORT.md``: the claims table with verdicts, every table and figure beside the paper's,
the deviations from the paper, hardware and wall time.

CLI::

    python -m analysis.report --study study.json --out results/<scale>/REPORT.md
        [--figure fig1=results/<scale>/figures/fig1.png ...]   name=path of each figure's PNG (linked relative to
                                                               the report; a PDF beside it is linked too)
        [--figures-dir DIR]      else: DIR/<fig>.png for fig1, fig2, fig4, fig5, fig6, fig7 where present
                                 (default DIR: the report's folder / figures)
        [--wall FILE ...]        Snakemake benchmark TSVs (column s) and/or run result.json files (wall_s);
                                 default: the result.json of every run listed in the manifest's "runs"
        [--elapsed-s SECONDS]    wall time of the whole study, if measured (e.g. the snakemake invocation)
        [--provenance FILE]      one run's provenance.json (device, host, packages, git commit); default: the
                                 first run of the manifest that has one
        [--anchor-stats FILE]    python -m retinanet anchor-stats --out of the scale's training data: the
                                 imbalance section (the positive rate per classification output beside COCO's)
        [--coco-anchor-stats FILE]   the same on COCO's annotations; default: COCO's published rate
        [--regime-section FILE]  results/<scale>/regime.md (python -m analysis.regime section): this study's
                                 addition, not in the paper, included after the figures
        [--schedule-section FILE]  results/<scale>/schedule.md (python -m analysis.schedule section): the headline
                                 verdicts at a longer schedule, this study's check, included after the regime's
        [--paper-values analysis/paper_values.yaml]
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from analysis.claims import ClaimResult, evaluate_claims, load_evidence
from analysis.imbalance import report_section as imbalance_section
from analysis.paper_values import PAPER_VALUES, PaperValues, load_paper_values
from analysis.study_io import Study, load_study, read_json, read_text, read_wall_time
from analysis.tables import TABLE_IDS, build_table, to_markdown
from analysis.variance import variance_section
from analysis.verdict import RULE_TEXT

FIGURE_CAPTIONS = {
    "fig1": "Figure 1: CE and FL against p_t for γ ∈ {0, .5, 1, 2, 5} (analytic, from retinanet.modeling.losses).",
    "fig2": "Figure 2: AP against inference time: our Table 1e runs (left) and the paper's (right, Nvidia M40).",
    "fig4": "Figure 4: CDFs of the normalized loss of positive and negative samples of our converged model.",
    "fig5": "Figure 5: CE, FL and FL* against x_t (analytic).",
    "fig6": "Figure 6: derivatives of Figure 5's losses by autograd, checked against eq. 9-11 when drawn.",
    "fig7": "Figure 7: FL* loss curves of the γ/β grid, blue where the run converged with AP over the threshold.",
}


def _esc(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_section(results: list[ClaimResult]) -> str:
    lines = ["## Claims", "", RULE_TEXT, "",
             "| | claim | paper's evidence | ours | verdict |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.id} | {_esc(r.claim)} | {_esc(r.paper)} | {_esc(r.ours)} | **{r.verdict}** |")
    lines += ["", "<details><summary>Tests behind each verdict</summary>", ""]
    mark = {True: "holds", False: "fails", None: "undecided"}
    for r in results:
        lines.append(f"- **{r.id}** ({r.verdict}): " + "; ".join(f"{d}: {mark[t]}" for d, t in r.tests))
    lines += ["", "</details>", ""]
    return "\n".join(lines)


IMBALANCE_CLAIMS = ("C3", "C4")
"""The claims about FL against alpha-CE, which the paper ties to the foreground-background imbalance: their text
names the scale's positive rate per classification output and, once run, the regime experiment's finding."""


def with_the_rate(claims: list[ClaimResult], anchor_stats: str | None, coco_anchor_stats: str | None,
                  regime_table: str | None) -> list[ClaimResult]:
    """C3 and C4 with the positive rate their verdict was judged at (``anchor_stats``, beside COCO's) and the
    regime experiment's FL - best CE per rate (``regime_table``: table_imbalance.csv) appended to their text."""
    from analysis.imbalance import beside_coco, coco_rate, load_rate
    from analysis.regime import claim_note

    notes = []
    if anchor_stats is not None:
        notes.append(f"Judged at this scale's positive rate per classification output, "
                     f"{beside_coco(load_rate(anchor_stats), coco_rate(coco_anchor_stats))}.")
    if regime_table is not None:
        notes.append(claim_note(regime_table))
    if not notes:
        return claims
    return [dataclasses.replace(c, ours=f"{c.ours}. {' '.join(notes)}") if c.id in IMBALANCE_CLAIMS else c
            for c in claims]


def figure_notes(study: Study, evidence) -> dict[str, str]:
    """Facts stated under figures: Fig. 4's sample counts, Fig. 7's threshold and how many settings were effective."""
    from analysis.fig7 import effective, fl_reference, load_settings, threshold

    notes = {}
    if evidence.samples is not None:
        notes["fig4"] = f"Samples used: {evidence.samples.describe()}; the paper used ~10^5 positive and ~10^7 " \
                        f"negative samples."
    if study.figure("fig7"):
        thr, text = threshold(study.scale, fl_reference(study))
        settings = load_settings(study)
        good = [f"γ={s.gamma:g} β={s.beta:g}" for s in settings if effective(s, thr)]
        notes["fig7"] = (f"Threshold: {text}. Effective: {len(good)} of {len(settings)} settings "
                         f"({', '.join(good) or 'none'}).")
    return notes


def figures_section(figures: dict[str, Path], report_dir: Path, notes: dict[str, str]) -> str:
    lines = ["## Figures", ""]
    missing = [n for n in FIGURE_CAPTIONS if n not in figures]
    if missing:
        lines += [f"Not generated: {', '.join(missing)}.", ""]
    for name, png in figures.items():
        rel = Path(os.path.relpath(png, report_dir)).as_posix()
        caption = FIGURE_CAPTIONS.get(name, name) + (f" {notes[name]}" if name in notes else "")
        lines += [f"### {name}", "", caption, "", f"![{name}]({rel})"]
        pdf = png.with_suffix(".pdf")
        if pdf.exists():
            lines.append(f"([PDF]({Path(os.path.relpath(pdf, report_dir)).as_posix()}))")
        lines.append("")
    return "\n".join(lines)


def deviations_section(study: Study) -> str:
    devs = study.deviations
    lines = ["## Deviations from the paper", ""]
    if not devs:
        return "\n".join(lines + [f"None listed for scale `{study.scale}`.", ""])
    lines += ["| field | paper | ours | reason |", "|---|---|---|---|"]
    for d in devs:
        lines.append("| " + " | ".join(_esc(d.get(k, "")) for k in ("field", "paper", "ours", "reason")) + " |")
    return "\n".join(lines + [""])


def _run_files(study: Study, field: str) -> list[Path]:
    """Existing files named by the manifest's ``runs.<id>.<field>`` (e.g. ``result``)."""
    out = []
    for run in study.data.get("runs", {}).values():
        if isinstance(run, dict) and isinstance(run.get(field), str) and study.resolve(run[field]).is_file():
            out.append(study.resolve(run[field]))
    return out


def hardware_section(study: Study, wall_files: list[str], elapsed_s: float | None, provenance: str | None) -> str:
    """Hardware (manifest, a run's provenance.json) and wall time (given files, else the runs' result.json)."""
    lines = ["## Hardware and wall time", ""]
    if study.data.get("hardware"):
        lines.append(f"- Hardware (study manifest): {_esc(study.data['hardware'])}")
    if provenance is None:
        dirs = [study.resolve(r["dir"]) / "provenance.json" for r in study.data.get("runs", {}).values()
                if isinstance(r, dict) and isinstance(r.get("dir"), str)]
        provenance = next((str(p) for p in dirs if p.is_file()), None)
    if provenance:
        prov = read_json(provenance, "provenance file")
        dev = prov.get("device", {}) if isinstance(prov, dict) else {}
        name = dev.get("name", dev) if isinstance(dev, dict) else dev
        lines.append(f"- Device ({provenance}): {_esc(name)}; host "
                     f"{_esc(prov.get('host', {}).get('platform', '?'))}; torch threads "
                     f"{_esc(dev.get('torch_threads', '?') if isinstance(dev, dict) else '?')}; git "
                     f"{_esc(prov.get('git', {}))}; packages {_esc(prov.get('packages', {}))}")
    if elapsed_s is not None:
        lines.append(f"- Wall time of the study: {elapsed_s / 3600:.2f} h ({elapsed_s:.0f} s)")
    files = [Path(p) for p in wall_files] or _run_files(study, "result")
    if files:
        total = sum(read_wall_time(p) for p in files)
        what = "given benchmark/result files" if wall_files else "training runs (their result.json wall_s)"
        lines.append(f"- Summed job time over {len(files)} {what}: {total / 3600:.2f} h ({total:.0f} s)")
    if len(lines) == 2:
        lines.append("- Not recorded (no hardware, benchmark or result files were given).")
    return "\n".join(lines + [""])


def build_report(study: Study, pv: PaperValues, *, figures: dict[str, Path], report_dir: Path,
                 wall_files: list[str] = (), elapsed_s: float | None = None, provenance: str | None = None,
                 anchor_stats: str | None = None, coco_anchor_stats: str | None = None,
                 regime_section: str | None = None, schedule_section: str | None = None,
                 regime_table: str | None = None) -> str:
    """The whole REPORT.md text (reads the study's run outputs); with ``anchor_stats`` an imbalance section after the
    claims (:mod:`analysis.imbalance`), with ``regime_section`` and ``schedule_section`` those files' sections after
    the figures."""
    tables = [(tid, build_table(pv.tables[tid], study)) for tid in TABLE_IDS if study.table(tid)]
    evidence = load_evidence(study)
    claims = with_the_rate(evaluate_claims(evidence), anchor_stats, coco_anchor_stats, regime_table)
    counts = {v: sum(c.verdict == v for c in claims) for v in ("reproduced", "not reproduced", "inconclusive")}
    seeds = ", ".join(str(s) for s in study.seeds) or "?"
    head = [f"# Reproduction report: Focal Loss for Dense Object Detection (scale `{study.scale}`)", "",
            f"Generated by `analysis/report.py` from `{study.path}` (seeds: {seeds}). Paper values come from "
            f"`analysis/paper_values.yaml`; every table shows the paper's value, ours as mean ± std over seeds with "
            f"each seed's value, and the difference.", "",
            f"Verdicts: {counts['reproduced']} reproduced, {counts['not reproduced']} not reproduced, "
            f"{counts['inconclusive']} inconclusive (of {len(claims)} claims).", ""]
    if study.scale != "paper":
        head += [f"> **At `{study.scale}` scale absolute AP is not comparable to the paper's COCO numbers** "
                 f"(different data, backbone size, image size and schedule; see the deviations). Judge the "
                 f"orderings and gaps relative to seed noise, as the claims below do; the per-value tolerances "
                 f"of `paper_values.yaml` apply only at `paper` scale.", ""]
    parts = ["\n".join(head), claims_section(claims)]
    if anchor_stats is not None:
        parts.append(imbalance_section(study.scale, anchor_stats, coco_anchor_stats))
    parts.append(variance_section(study))
    parts += ["## Tables", ""]
    parts += [to_markdown(pv.tables[tid], rows, study.scale) for tid, rows in tables]
    missing = [tid for tid in TABLE_IDS if not study.table(tid)]
    if missing:
        parts.append(f"Tables not in this study: {', '.join(missing)}.\n")
    parts.append(figures_section(figures, report_dir, figure_notes(study, evidence)))
    if regime_section is not None:
        parts.append(read_text(Path(regime_section), "regime report section"))
    if schedule_section is not None:
        parts.append(read_text(Path(schedule_section), "schedule report section"))
    parts += [deviations_section(study), hardware_section(study, list(wall_files), elapsed_s, provenance)]
    return "\n".join(parts)


def _figure_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"--figure expects NAME=PATH, got {text!r}")
    return name, Path(path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from analysis.cli import run_cli
    from retinanet.atomic import write_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--out", required=True, help="REPORT.md path")
    parser.add_argument("--figure", action="append", default=[], metavar="NAME=PATH",
                        help="a figure's PNG (repeatable); default: <figures-dir>/<name>.png of each paper figure")
    parser.add_argument("--figures-dir", default=None, help="default: the report's folder / figures")
    parser.add_argument("--wall", nargs="*", default=[], help="benchmark TSVs / result.json files")
    parser.add_argument("--elapsed-s", type=float, default=None)
    parser.add_argument("--provenance", default=None)
    parser.add_argument("--paper-values", default=str(PAPER_VALUES))
    parser.add_argument("--anchor-stats", default=None, help="anchor-stats JSON of the scale's training data")
    parser.add_argument("--coco-anchor-stats", default=None, help="anchor-stats JSON of COCO's annotations")
    parser.add_argument("--regime-section", default=None, help="results/<scale>/regime.md, this study's addition")
    parser.add_argument("--schedule-section", default=None, help="results/<scale>/schedule.md, this study's check")
    parser.add_argument("--regime-table", default=None,
                        help="results/<scale>/tables/table_imbalance.csv: C3 and C4 cite the regime experiment")

    def run(args) -> None:
        out = Path(args.out)
        if args.figure:
            figures = dict(_figure_arg(f) for f in args.figure)
        else:
            fig_dir = Path(args.figures_dir) if args.figures_dir else out.parent / "figures"
            figures = {n: fig_dir / f"{n}.png" for n in FIGURE_CAPTIONS if (fig_dir / f"{n}.png").is_file()}
        text = build_report(load_study(args.study), load_paper_values(args.paper_values), figures=figures,
                            report_dir=out.parent, wall_files=args.wall, elapsed_s=args.elapsed_s,
                            provenance=args.provenance, anchor_stats=args.anchor_stats,
                            coco_anchor_stats=args.coco_anchor_stats, regime_section=args.regime_section,
                            schedule_section=args.schedule_section, regime_table=args.regime_table)
        write_text(out, text)

    return run_cli(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
