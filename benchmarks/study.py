"""Study-level numbers: the paper-scale dry run and the mini study's wall time from Snakemake benchmark files."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def dry_run(configfile: str = "config/paper.yaml") -> tuple[float, int]:
    """Seconds of ``snakemake -n --configfile CONFIGFILE`` (run from the repository root) and its job count."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--nolock", "--cores", "1", "--configfile", configfile]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
    totals = re.findall(r"^total\s+(\d+)\s*$", out.stdout + out.stderr, flags=re.M)
    return seconds, int(totals[0]) if totals else -1


def benchmark_dir(scale: str = "mini") -> Path:
    """``<workdir>/benchmarks`` of a scale (where the rules' ``benchmark:`` files go)."""
    cfg = yaml.safe_load((ROOT / "config" / f"{scale}.yaml").read_text())
    return ROOT / cfg["workdir"] / "benchmarks"


def study_wall_time(directory: Path) -> dict[str, float] | None:
    """Sum of the ``s`` column of every Snakemake benchmark file under ``directory``, per rule and in total (job
    seconds; jobs that ran in parallel are added up), or None if there is none."""
    files = sorted(directory.rglob("*.tsv")) if directory.is_dir() else []
    if not files:
        return None
    per_rule: dict[str, float] = {}
    for path in files:
        rule = path.relative_to(directory).parts[0] if len(path.relative_to(directory).parts) > 1 else path.stem
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        per_rule[rule] = per_rule.get(rule, 0.0) + sum(float(r["s"]) for r in rows if r.get("s"))
    per_rule["total"] = sum(per_rule.values())
    per_rule["jobs"] = float(len(files))
    return per_rule
