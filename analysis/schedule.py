"""This study's check (issue 18, item 4), not in the paper: do the headline verdicts (C3, C6, C7) hold at a longer
schedule? Its table and report section, from the manifest ``work/<scale>/schedule/schedule.json``
(``workflow/schedule.py``) and the metrics files it names (relative to the working directory).

CLI (as the Snakemake rules call it)::

    python -m analysis.schedule table   --schedule schedule.json --out table_schedule.csv table_schedule.md
    python -m analysis.schedule section --schedule schedule.json --table table_schedule.md --out schedule.md

Each contrast is judged at each schedule by the report's verdict rule (:func:`analysis.verdict.compare` on AP over
seeds, then the claim's test: ``greater`` is :func:`~analysis.verdict.holds_greater`, ``equal``
:func:`~analysis.verdict.holds_equal`); the verdict *changes* when its test's result differs between the schedules.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from analysis.errors import AnalysisInputError
from analysis.seeds import SeedValues, seed_values
from analysis.study_io import read_json, read_metrics
from analysis.verdict import Comparison, compare, holds_equal, holds_greater, verdict

TITLE = "This study's check (not in the paper): the headline verdicts at a longer schedule"
TESTS: dict[str, tuple[Callable[[Comparison], bool | None], str]] = {
    "greater": (holds_greater, ">"),
    "equal": (holds_equal, "≈"),
}
"""A contrast's test in the manifest -> (its analysis.verdict function, its sign in the table)."""
HOLDS = {True: "holds", False: "fails", None: "undecided"}
CSV_FIELDS = ("claim", "contrast", "test", "schedule", "iterations", "a", "a_run", "b", "b_run", "n_a", "n_b",
              "a_mean", "a_std", "a_values", "b_mean", "b_std", "b_values", "delta", "threshold", "outcome", "holds",
              "verdict", "verdict_changed")


@dataclass(frozen=True)
class Setting:
    """One setting of the contrasts: its label, run name and iterations per schedule, and AP over seeds."""

    key: str
    label: str
    runs: dict[str, str]
    iterations: dict[str, int]
    ap: dict[str, SeedValues]


@dataclass(frozen=True)
class ContrastResult:
    """One contrast (``a`` against ``b``) judged at every schedule."""

    claim: str
    label: str
    a: Setting
    b: Setting
    test: str
    comparisons: dict[str, Comparison]

    def holds(self, schedule: str) -> bool | None:
        """The test's result at ``schedule`` (None: undecided)."""
        return TESTS[self.test][0](self.comparisons[schedule])

    def verdict(self, schedule: str) -> str:
        """``reproduced`` / ``not reproduced`` / ``inconclusive`` (:func:`analysis.verdict.verdict`)."""
        return verdict([self.holds(schedule)])

    @property
    def changed(self) -> bool:
        """Whether the test's result differs between the schedules."""
        return len({self.holds(s) for s in self.comparisons}) > 1


@dataclass(frozen=True)
class ScheduleResult:
    """The whole check: the schedules (the scale's first, ``1x``), the settings and the contrasts."""

    scale: str
    schedules: list[str]
    settings: dict[str, Setting]
    contrasts: list[ContrastResult]

    @property
    def changed(self) -> list[ContrastResult]:
        return [c for c in self.contrasts if c.changed]


def load_results(path: str | Path) -> ScheduleResult:
    """The manifest's settings with their AP over seeds and every contrast judged at every schedule;
    AnalysisInputError naming the file for anything missing or malformed."""
    path = Path(path)
    data = read_json(path, "schedule manifest")
    try:
        schedules = [s["key"] for s in data["schedules"]]
        if len(schedules) != 2:
            raise ValueError(f"'schedules' needs 2 entries, got {schedules}")
        settings = {}
        for key, s in data["settings"].items():
            ap = {sched: seed_values({seed: read_metrics(p) for seed, p in s["metrics"][sched].items()}, "AP")
                  for sched in schedules}
            settings[key] = Setting(key, s["label"], dict(s["runs"]), {k: int(v) for k, v in s["iterations"].items()},
                                    ap)
        contrasts = []
        for c in data["contrasts"]:
            if c["test"] not in TESTS:
                raise ValueError(f"contrast {c['claim']}: test {c['test']!r} is not one of {sorted(TESTS)}")
            a, b = settings[c["a"]], settings[c["b"]]
            comparisons = {s: compare(a.ap[s].values, b.ap[s].values) for s in schedules}
            contrasts.append(ContrastResult(c["claim"], c["label"], a, b, c["test"], comparisons))
    except AnalysisInputError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise AnalysisInputError(f"{path}: malformed schedule manifest ({exc!r})") from None
    return ScheduleResult(str(data.get("scale", "?")), schedules, settings, contrasts)


def _num(x: float, digits: int = 1, sign: bool = False) -> str:
    return "-" if not math.isfinite(x) else f"{x:{'+' if sign else ''}.{digits}f}"


def csv_text(result: ScheduleResult) -> str:
    """Long CSV: one row per (contrast, schedule)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for c in result.contrasts:
        for s in result.schedules:
            cmp, a, b = c.comparisons[s], c.a.ap[s], c.b.ap[s]
            writer.writerow({
                "claim": c.claim, "contrast": c.label, "test": c.test, "schedule": s, "iterations": c.a.iterations[s],
                "a": c.a.label, "a_run": c.a.runs[s], "b": c.b.label, "b_run": c.b.runs[s], "n_a": a.n, "n_b": b.n,
                "a_mean": a.mean, "a_std": a.std, "a_values": a.format_seeds(2), "b_mean": b.mean, "b_std": b.std,
                "b_values": b.format_seeds(2), "delta": cmp.diff, "threshold": cmp.threshold,
                "outcome": cmp.outcome.value, "holds": HOLDS[c.holds(s)], "verdict": c.verdict(s),
                "verdict_changed": c.changed})
    return buf.getvalue()


def markdown(result: ScheduleResult) -> str:
    """Two rows per contrast (one per schedule): AP of both sides over the runs, Δ, threshold, outcome and verdict; the
    longer schedule's row says whether the verdict changed."""
    head = ["claim: contrast (test)", "schedule (iterations)", "A: AP", "B: AP", "Δ A - B (threshold)",
            "outcome", "test → verdict", "verdict changed"]
    lines = [f"### Table schedule: {TITLE.split(': ', 1)[1]}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in result.contrasts:
        for i, s in enumerate(result.schedules):
            cmp = c.comparisons[s]
            name = f"{c.claim}: {c.a.label} {TESTS[c.test][1]} {c.b.label}" if i == 0 else ""
            changed = "" if i == 0 else ("**yes**" if c.changed else "no")
            lines.append("| " + " | ".join([
                name, f"{s} ({c.a.iterations[s]})",
                f"{c.a.ap[s].format(1)} ({c.a.ap[s].format_seeds(1)})",
                f"{c.b.ap[s].format(1)} ({c.b.ap[s].format_seeds(1)})",
                f"{_num(cmp.diff, sign=True)} ({_num(cmp.threshold)})", cmp.outcome.value,
                f"{HOLDS[c.holds(s)]} → {c.verdict(s)}", changed]) + " |")
    lines += ["", "AP in percent, mean ± std over the runs (seeds, on each pretraining where the study crosses them) "
                  "with each run's value; Δ and its threshold by the report's verdict rule. Runs: " + "; ".join(
                      f"{st.label}: `{'`, `'.join(st.runs[s] for s in result.schedules)}`"
                      for st in _distinct(result)) + "."]
    return "\n".join(lines) + "\n"


def _distinct(result: ScheduleResult) -> list[Setting]:
    """The settings with distinct runs (at ``mini``, Table 1d's FL is Table 3's FL run), in manifest order."""
    out, seen = [], set()
    for st in result.settings.values():
        runs = tuple(st.runs.values())
        if runs not in seen:
            seen.add(runs)
            out.append(st)
    return out


def changes_sentence(result: ScheduleResult) -> str:
    """In words, which verdicts the longer schedule changes, or that it changes none."""
    base, longer = result.schedules
    n = len(result.contrasts)
    if not result.changed:
        return f"Going from {base} to {longer} changes none of the {n} verdicts."
    parts = [f"{c.claim} ({c.label}): {c.verdict(base)} at {base}, {c.verdict(longer)} at {longer}"
             for c in result.changed]
    return f"Going from {base} to {longer} changes {len(parts)} of the {n} verdicts: " + "; ".join(parts) + "."


def _reading(result: ScheduleResult) -> str:
    """The FL - alpha-CE gap and each setting's AP at both schedules, in words."""
    base, longer = result.schedules
    c3 = next((c for c in result.contrasts if c.claim == "C3"), None)
    parts = []
    if c3 is not None:
        parts.append(f"{c3.a.label} - {c3.b.label}: {_num(c3.comparisons[base].diff, sign=True)} AP at {base}, "
                     f"{_num(c3.comparisons[longer].diff, sign=True)} AP at {longer}.")
    gains = [f"{st.label} {_num(st.ap[base].mean)} → {_num(st.ap[longer].mean)} "
             f"({_num(st.ap[longer].mean - st.ap[base].mean, sign=True)})" for st in _distinct(result)]
    parts.append(f"AP from {base} to {longer}: " + ", ".join(gains) + ".")
    return " ".join(parts)


def section(result: ScheduleResult, table_md: str) -> str:
    """The report section (Markdown)."""
    base, longer = result.schedules
    iters = {s: sorted({st.iterations[s] for st in result.settings.values()}) for s in result.schedules}
    lines = [f"## {TITLE}", "",
             f"Not a table of the paper: issue 18 asks whether the headline verdicts depend on this scale's short "
             f"schedule. The settings of the headline contrasts were trained again at {longer} the scale's "
             f"schedule ({', '.join(map(str, iters[base]))} → {', '.join(map(str, iters[longer]))} iterations; the "
             f"learning-rate steps at the same fractions of it, the same warm-up), with the same seeds and "
             f"pretrainings and nothing else changed; the {base} runs are the study's own. Each contrast is judged "
             f"at each schedule by the report's verdict rule. The settings are fixed (C3: FL α .25 against α-CE α "
             f".75; C6: one OHEM setting; C7: FL* γ 2 β 1), so a {base} verdict here can differ from the claims "
             f"table's, which picks the best α of the grids and the best OHEM and adds FL* γ 4 β 0.", "",
             f"**{changes_sentence(result)}** {_reading(result)}", "", table_md]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from analysis.cli import run_cli
    from retinanet.atomic import write_text

    parser = argparse.ArgumentParser(prog="python -m analysis.schedule", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("table", "section"))
    parser.add_argument("--schedule", required=True, help="work/<scale>/schedule/schedule.json")
    parser.add_argument("--out", nargs="+", required=True, help="output files (.csv .md / .md)")
    parser.add_argument("--table", help="section: the table's Markdown file")

    def run(args: argparse.Namespace) -> None:
        result = load_results(args.schedule)
        if args.what == "table":
            for out in args.out:
                write_text(out, csv_text(result) if out.endswith(".csv") else markdown(result))
        else:
            if not args.table:
                raise ValueError("section needs --table")
            write_text(args.out[0], section(result, Path(args.table).read_text(encoding="utf-8")))

    return run_cli(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
