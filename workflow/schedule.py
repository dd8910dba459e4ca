"""This study's check (issue 18, item 4), not a paper table: are the headline verdicts stable against the schedule?

The headline contrasts are C3 (FL beats the best alpha-CE), C6 (FL beats OHEM) and C7 (FL* about as good as FL).
Their settings (:func:`settings`) are the study's own rows, taken from :func:`workflow.rows.table_rows` by key:
Table 3's FL (gamma 2, alpha .25: DEFAULT_FL), alpha-CE (alpha .75: CE_BEST, Table 1a's best and Table 3's CE row)
and FL* (gamma 2, beta 1); Table 1d's OHEM at the scale's first ``table1d_batch`` and ``table1d_ohem_nms``, and
Table 1d's FL, which C6 is judged against (ResNet-``deep_depth`` at ``ablation_scale``; at ``mini``, where the deep
depth is 50, it is Table 3's FL run). Each setting is compared at two schedules:

- ``1x``: the study's runs of the row, at the study's seeds for it (which must be the scale's headline seeds). The
  same run ids, so they are reused, never retrained;
- ``<multiple>x``: the same row with ``solver.schedule`` multiplied by ``multiple`` (``-2x`` in the run name,
  :func:`workflow.study.run_name`): new runs, trained by the study's run_config/train/evaluate rules.

Pure Python, no Snakemake: the Snakefile builds ``SCHEDULE`` with :func:`build_schedule`;
``workflow/rules/schedule.smk`` runs it (``snakemake schedule``, never part of ``all``); ``analysis/schedule.py``
makes its table and report section from the manifest (:attr:`Schedule.manifest`). The scale config's optional
section::

    schedule_check: {multiple: 2}     # the second schedule, a multiple of the scale's
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from retinanet.config import ConfigError, RunConfig, merge, to_dict
from retinanet.rundir.identity import without
from workflow.rows import Row, fmt, table_rows
from workflow.scale import StudyError
from workflow.study import RUNTIME_FIELDS, Study, paths, resolve, run_id, run_name

BASE = "1x"
"""The scale's own schedule: the study's runs."""


@dataclass(frozen=True)
class Setting:
    """One setting of the headline contrasts: ``key`` (manifest), ``label`` (table) and the study row it is."""

    key: str
    label: str
    table: str
    row: str


@dataclass(frozen=True)
class Contrast:
    """A headline contrast ``a`` against ``b`` (setting keys) and its test: ``greater`` (analysis.verdict's
    holds_greater: "a beats b") or ``equal`` (holds_equal: "a about as good as b")."""

    claim: str
    label: str
    a: str
    b: str
    test: str


CONTRASTS = (
    Contrast("C3", "FL vs best α-CE", "fl", "ce", "greater"),
    Contrast("C6", "FL vs OHEM (Table 1d)", "fl-1d", "ohem", "greater"),
    Contrast("C7", "FL* vs FL", "fls", "fl", "equal"),
)
"""The contrasts of analysis/claims.py's C3, C6 and C7 on the settings below (C3: FL alpha .25 against alpha-CE
alpha .75; C6: OHEM at the first batch and NMS of the grid; C7: FL* gamma 2 beta 1, the headline FL* row)."""


def settings(grids: dict) -> tuple[Setting, ...]:
    """The settings of :data:`CONTRASTS` as rows of the study's tables (keys as workflow.rows.table_rows)."""
    batch, nms = grids["table1d_batch"][0], grids["table1d_ohem_nms"][0]
    deep, abl = grids["deep_depth"], grids["ablation_scale"]
    return (
        Setting("fl", "FL (γ 2, α .25)", "3", "loss=FL,gamma=2"),
        Setting("ce", "α-CE (α .75)", "3", "loss=CE"),
        Setting("fls", "FL* (γ 2, β 1)", "3", "loss=FL*,gamma=2,beta=1"),
        Setting("fl-1d", f"FL (Table 1d: depth {deep}, scale {abl})", "1d", "method=FL"),
        Setting("ohem", f"OHEM (batch {batch}, nms {fmt(nms)})", "1d", f"method=OHEM,batch={batch},nms={fmt(nms)}"),
    )


@dataclass
class Schedule:
    """The check at one scale: its new runs (run id -> resolved RunConfig) and manifest; empty without a
    ``schedule_check`` section."""

    runs: dict[str, RunConfig]
    manifest: dict

    def run_config(self, rid: str) -> dict:
        """The config file content for run ``rid`` (:data:`workflow.study.RUNTIME_FIELDS` dropped)."""
        return without(to_dict(self.runs[rid]), RUNTIME_FIELDS)


def schedule_paths(scale: dict) -> dict[str, str]:
    """Path patterns of the check's own files (the runs use :func:`workflow.study.paths`)."""
    w, r = scale["workdir"], scale["results"]
    return {
        "manifest": f"{w}/schedule/schedule.json",
        "table": f"{r}/tables/table_schedule",
        "section": f"{r}/schedule.md",
    }


def multiple_of(scale: dict) -> float:
    """``schedule_check.multiple``, validated: a number > 0 other than 1 (StudyError naming the key); the section's
    only other key is ``pretrainings`` (a list of replica numbers)."""
    where = f"config {scale['scale']}: schedule_check"
    section = scale["schedule_check"]
    if not isinstance(section, dict) or "multiple" not in section or set(section) - {"multiple", "pretrainings"}:
        got = sorted(section) if isinstance(section, dict) else type(section).__name__
        raise StudyError(f"{where}: expected a mapping with the key 'multiple' (and optionally 'pretrainings'), "
                         f"got {got}")
    only = section.get("pretrainings")
    if only is not None and (not isinstance(only, list) or not only or
                             not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in only)):
        raise StudyError(f"{where}.pretrainings: must be a non-empty list of replica numbers >= 0, got {only!r}")
    multiple = section["multiple"]
    if isinstance(multiple, bool) or not isinstance(multiple, (int, float)) or not 0 < multiple != 1:
        raise StudyError(f"{where}.multiple: must be a number > 0 other than 1, got {multiple!r}")
    return float(multiple)


def _row(grids: dict, setting: Setting, where: str) -> Row:
    rows = table_rows(grids)[setting.table]
    for row in rows:
        if isinstance(row, Row) and row.key == setting.row:
            return row
    raise StudyError(f"{where}: Table {setting.table} has no row {setting.row!r}")


def _study_entry(study: Study, setting: Setting, where: str) -> dict:
    for entry in study.manifest["tables"][setting.table]:
        if entry.get("key") == setting.row:
            return entry
    raise StudyError(f"{where}: the study's Table {setting.table} has no row {setting.row!r}")


def scaled(overrides: dict, multiple: float) -> dict:
    """A row's paper-unit overrides with its schedule (``solver.schedule``, default 1x) times ``multiple``."""
    schedule = float((overrides.get("solver") or {}).get("schedule", 1.0))
    return merge(overrides, {"solver": {"schedule": schedule * multiple}})


def _replicates(entry: dict, pretrainings: list[int] | None) -> list[tuple[int, int]]:
    """``(pretraining, seed)`` of the study manifest entry's runs that the check compares (its pretraining replicas,
    where the entry lists them, crossed with its seeds; only those in ``pretrainings`` when given), so the longer
    schedule repeats exactly these replicates and both schedules are judged on the same ones."""
    have = entry.get("pretrainings", [0])
    return [(k, int(s)) for k in have if pretrainings is None or k in pretrainings for s in entry["seeds"]]


def build_schedule(scale: dict, study: Study) -> Schedule:
    """The check's settings at 1x (the ``study``'s runs) and at ``schedule_check.multiple`` x (new runs, the same
    seeds and pretraining replicas), and its manifest; an empty Schedule when the scale has no ``schedule_check``
    section. StudyError naming the key when a setting's study seeds are not the headline seeds, or a new run would
    be a study run with another config."""
    if not scale.get("schedule_check"):
        return Schedule({}, {})
    multiple = multiple_of(scale)
    only = scale["schedule_check"].get("pretrainings")
    longer = f"{fmt(multiple)}x"
    headline = list(scale["seeds"]["headline"])
    p = paths(scale)
    runs: dict[str, RunConfig] = {}
    entries = {}
    for setting in settings(scale["grids"]):
        where = f"config {scale['scale']}: schedule_check {setting.key}"
        entry = _study_entry(study, setting, where)
        if list(entry["seeds"]) != headline:
            raise StudyError(f"{where}: the study runs Table {setting.table} row {setting.row!r} at seeds "
                             f"{entry['seeds']}, not the headline seeds {headline} (seeds.headline_rows)")
        overrides = scaled(_row(scale["grids"], setting, where).overrides, multiple)
        name = run_name(overrides, scale)
        key_of = {path: key for key, path in entry["metrics"].items()}
        metrics: dict[str, dict[str, str]] = {BASE: {}, longer: {}}
        iterations = {}
        replicates = _replicates(entry, only)
        if not replicates:
            raise StudyError(f"{where}: schedule_check.pretrainings {only} has none of the study's pretrainings "
                             f"{entry.get('pretrainings', [0])}")
        for k, seed in replicates:
            base_rid, rid = run_id(entry["run"], seed, k), run_id(name, seed, k)
            key = key_of[p["metrics"].format(rid=base_rid)]
            try:
                cfg = resolve(scale, overrides, seed, k)
            except ConfigError as exc:
                raise StudyError(f"{where}: {exc}") from None
            if rid in study.runs and study.runs[rid] != cfg:
                raise StudyError(f"{where}: run {rid} is also a study run with a different config")
            if rid not in study.runs:
                runs[rid] = cfg
            metrics[BASE][key], metrics[longer][key] = entry["metrics"][key], p["metrics"].format(rid=rid)
            iterations = {BASE: study.runs[base_rid].solver.iterations, longer: cfg.solver.iterations}
        entries[setting.key] = {
            "label": setting.label, "table": setting.table, "row": setting.row, "seeds": headline,
            "pretrainings": sorted({k for k, _ in replicates}), "runs": {BASE: entry["run"], longer: name},
            "iterations": iterations, "metrics": metrics}
    manifest = {
        "scale": scale["scale"],
        "schedules": [{"key": BASE, "multiple": 1.0}, {"key": longer, "multiple": multiple}],
        "settings": entries,
        "contrasts": [{"claim": c.claim, "label": c.label, "a": c.a, "b": c.b, "test": c.test} for c in CONTRASTS],
    }
    json.dumps(manifest)  # plain JSON, or fail here
    return Schedule(runs, manifest)
