"""The calibration table of a small scale (issue 4): what one run costs on this machine and what it reaches.

Reads a finished study's working folder (``work/<scale>``: the manifest ``study.json``, Snakemake's benchmark
records ``benchmarks/<rule>/<run>.tsv``, every run's ``metrics.json`` and config, the pretraining summaries
``weights/*.pth.json``) and, if given, the output of ``python -m retinanet anchor-stats --out FILE``. Prints a
Markdown table:

- wall time per job, by rule and by model (depth, image size), median [min-max], and their sum (a resumed
  run's train time counts all its attempts);
- the pretraining jobs: held-out accuracy and seconds;
- AP of the default FL run (Table 3's ``loss=FL,gamma=2``: mean ± std over seeds, each seed);
- AP of Table 2's model: the same loss at the scale's long schedule, with scale jitter;
- the seed-to-seed standard deviation of AP for every row that has several seeds;
- the foreground : all anchor ratio, and the positive rate per classification output beside COCO's
  (:mod:`analysis.imbalance`).

``python -m analysis.calibration --workdir work/mini [--anchor-stats work/mini/anchor-stats.json]
[--coco-anchor-stats FILE]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from analysis.errors import AnalysisInputError
from analysis.imbalance import beside_coco, coco_rate, load_rate
from analysis.seeds import seed_values
from analysis.study_io import Study, load_entry, load_study, read_json, read_wall_time

FL_KEY = ("3", "loss=FL,gamma=2")
"""The default FL run: Table 3's FL row (gamma 2, alpha .25 at the ablation setting)."""
LONG_TABLE = "2"
"""Table 2: the default FL loss at the scale's ``long_schedule`` (a multiple of the ablations' iterations)."""


def _spread(values: list[float]) -> str:
    """``median s [min-max] (n)``."""
    return f"{statistics.median(values):.0f} s [{min(values):.0f}-{max(values):.0f}] (n={len(values)})"


def job_times(workdir: Path, study: Study) -> dict[str, dict[str, list[float]]]:
    """``{rule: {model: [seconds per job]}}`` from the benchmark records of every run's train/evaluate job;
    ``model`` is ``R<depth> <min_size> px`` from the run's config (``x<iterations>`` when not the base).

    A train job's time is the larger of its benchmark record and its run's ``result.json`` ``wall_s``: Snakemake's
    benchmark holds only the last job of a resumed run, ``wall_s`` the sum over all its attempts (without the
    process start-up that the benchmark also counts)."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rid, run in study.data.get("runs", {}).items():
        cfg = yaml.safe_load(study.resolve(run["config"]).read_text())
        model = f"R{cfg['model']['depth']} {cfg['data']['min_size']} px, {cfg['solver']['iterations']} it"
        for rule in ("train", "evaluate"):
            tsv = workdir / "benchmarks" / rule / f"{rid}.tsv"
            if not tsv.is_file():
                raise AnalysisInputError(f"{tsv}: benchmark record of {rule} job {rid} not found")
            seconds = read_wall_time(tsv)
            if rule == "train":
                seconds = max(seconds, read_wall_time(study.resolve(run["result"])))
            out[rule][model].append(seconds)
    return out


def table(workdir: str | Path, anchor_stats: str | Path | None = None,
          coco_anchor_stats: str | Path | None = None) -> str:
    """The calibration table (Markdown) of the study in ``workdir``; with ``anchor_stats`` (an ``anchor-stats
    --out`` file) the imbalance rows, COCO's rate measured from ``coco_anchor_stats`` or else the published one."""
    workdir = Path(workdir)
    study = load_study(workdir / "study.json")
    rows: list[tuple[str, str]] = []
    times = job_times(workdir, study)
    total = 0.0
    for rule in ("train", "evaluate"):
        for model, secs in sorted(times[rule].items()):
            rows.append((f"{rule} job wall time, {model}", _spread(secs)))
            total += sum(secs)
    other = [p for p in (workdir / "benchmarks").rglob("*.tsv") if p.parent.name not in ("train", "evaluate")]
    other_s = sum(read_wall_time(p) for p in other)
    rows.append(("sum of job wall times: train + evaluate; all other jobs",
                 f"{total / 3600:.2f} h; {other_s / 60:.1f} min ({len(other)} jobs)"))
    for summary in sorted((workdir / "weights").glob("*.pth.json")) if (workdir / "weights").is_dir() else []:
        s = read_json(summary, "pretraining summary")
        rows.append((f"pretraining {summary.name.removesuffix('.pth.json')} ({s['config']['iterations']} steps)",
                     f"held-out accuracy {100 * s['val_accuracy']:.1f} %, {s['wall_s']:.0f} s"))
    entries = {(tid, e["key"]): e for tid, es in study.data.get("tables", {}).items() for e in es if "metrics" in e}
    if FL_KEY not in entries:
        raise AnalysisInputError(f"{workdir / 'study.json'}: no Table {FL_KEY[0]} row {FL_KEY[1]!r}")
    fl = seed_values(load_entry(study, entries[FL_KEY], f"table {FL_KEY[0]}"), "AP")
    rows.append(("AP of the default FL run (gamma 2, alpha .25), mean ± std", f"{fl.format(2)} ({fl.format_seeds(2)})"))
    for entry in study.data.get("tables", {}).get(LONG_TABLE, []):
        if "metrics" in entry:
            v = seed_values(load_entry(study, entry, f"table {LONG_TABLE}"), "AP")
            rows.append((f"AP of Table {LONG_TABLE}'s {entry['key']} (FL gamma 2, alpha .25, {entry['schedule']:g}x "
                         "schedule, scale jitter)", f"{v.format(2)} ({v.format_seeds(2)})"))
    for (tid, key), entry in sorted(entries.items()):
        if len(entry.get("metrics", {})) > 1:
            v = seed_values(load_entry(study, entry, f"table {tid}"), "AP")
            if len(set(v.pretrainings)) > 1:
                rows.append((f"spread of AP, Table {tid} {key}: all runs; seeds within a pretraining; between "
                             "pretrainings (std of their means)",
                             f"{v.std:.2f}; {v.seed_std:.2f}; {v.pretraining_std:.2f} (mean {v.mean:.2f}; "
                             f"{v.format_seeds(2)})"))
            else:
                rows.append((f"seed std of AP, Table {tid} {key}",
                             f"{v.std:.2f} (mean {v.mean:.2f}; {v.format_seeds(2)})"))
    if anchor_stats is not None:
        a = read_json(anchor_stats, "anchor statistics")
        rows.append(("foreground : all anchors per image",
                     f"{a['foreground_per_image']:.1f} : {a['anchors_per_image']:.0f} "
                     f"({100 * a['foreground_fraction']:.2f} %); objects without a foreground anchor "
                     f"{100 * a['objects_without_foreground_fraction']:.1f} %"))
        coco = coco_rate(coco_anchor_stats)
        rows.append(("positive rate per classification output, fg / (anchors x K), mean over images",
                     f"{beside_coco(load_rate(anchor_stats), coco)} (COCO's "
                     f"{'published' if coco.published else 'measured with anchor-stats'})"))
    return "\n".join(["| quantity | measured |", "|---|---|"] + [f"| {q} | {v} |" for q, v in rows]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.calibration", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="the study's working folder, e.g. work/mini")
    parser.add_argument("--anchor-stats", help="JSON written by python -m retinanet anchor-stats --out")
    parser.add_argument("--coco-anchor-stats", help="the same on COCO's annotations (default: the published rate)")
    args = parser.parse_args(argv)
    try:
        print(table(args.workdir, args.anchor_stats, args.coco_anchor_stats), end="")
    except AnalysisInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
