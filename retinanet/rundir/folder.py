"""The run folder (``RUNDIR``): its files' names, and what a training job does with a folder before it trains:
reuse a finished run of the same identity, resume an unfinished one or start afresh (:func:`prepare`).

The files, as ``python -m retinanet train`` writes them, are listed in :mod:`retinanet.engine.train`'s docstring.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from retinanet import atomic
from retinanet.config import RunConfig, to_dict
from retinanet.engine import checkpoint
from retinanet.rundir import attempts, lock, record

CONFIG = "config.resolved.yaml"
PROVENANCE = "provenance.json"
LOG = "log.jsonl"
LAST = "checkpoints/last.pt"
FINAL = "model_final.pt"
RESULT = "result.json"


def recovered_result(out: Path) -> dict[str, Any] | None:
    """The result of a run completed before ``run.json`` existed whose ``result.json`` Snakemake deleted before
    rerunning the job: the iteration from ``model_final.pt``, the batch plan from ``provenance.json``, the wall time
    from ``log.jsonl`` (logged seconds per iteration: training only). None if a file is missing or incomplete."""
    try:
        final = checkpoint.load(out / FINAL)
        prov = json.loads((out / PROVENANCE).read_text())
        wall, done = 0.0, 0
        for line in (out / LOG).read_text().splitlines():
            entry = json.loads(line)
            wall, done = wall + entry["s_per_iter"] * (entry["iteration"] - done), entry["iteration"]
        cfg = final["config"]
        if done != final["iteration"]:
            return None
        return {"status": "completed", "iteration": done, "wall_s": wall, "batch": prov["batch"],
                "precision": cfg["precision"], "channels_last": cfg["channels_last"],
                "recovered": "from model_final.pt, provenance.json and log.jsonl (wall_s: logged training time)"}
    except (checkpoint.CheckpointError, OSError, ValueError, KeyError, TypeError):
        return None


def prepare(out: Path, cfg: RunConfig, ident: dict, resume: bool) -> record.Decision:
    """Rank 0, before any rank reads the folder: reuse, resume or start the run in ``out`` (``--resume no``:
    always from scratch). A reused run gets its ``result.json`` back (Snakemake deletes it before rerunning a job)
    and today's config (operational fields such as the data root, which evaluation reads from the folder)."""
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        decision = record.decide(out, ident, final=FINAL, checkpoint=LAST, config=CONFIG, result=RESULT,
                                 keep=(lock.LOCK,), recover=recovered_result)
    else:
        decision = record.Decision("fresh", f"training {out} from scratch (--resume no)")
    print(f"train: {decision.message}", file=sys.stderr, flush=True)
    if decision.action == "fresh":  # a restart of the same run keeps its attempts: their time was spent on it
        for name in (RESULT, FINAL, LAST, LOG) + (() if resume else (attempts.FILE,)):
            (out / name).unlink(missing_ok=True)
    if decision.action == "reuse":
        atomic.write_text(out / CONFIG, yaml.safe_dump(to_dict(cfg), sort_keys=False))
        atomic.write_json(out / RESULT, decision.result)
    record.write(out, ident, decision.result)
    return decision


def truncate_log(path: Path, iteration: int) -> None:
    """Keep the log lines of steps up to ``iteration`` (the checkpoint a resumed run starts from)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("iteration", 0) <= iteration:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut short by the kill
            continue
    atomic.write_text(path, "".join(line + "\n" for line in kept))
