"""The study: which trained models make up each table and figure of the paper, at any scale.

Pure Python, no Snakemake. The Snakefile and the tests import it.

Runs are described in the paper's own terms first: a *paper-unit* run config is :class:`retinanet.config.RunConfig`'s
defaults (which are the paper's values) plus the few fields a table row changes. A scale then translates it
(:func:`resolve`): the paper's backbone depth and image scale are mapped through the scale's tables (50 -> 18 at
``mini``), the schedule is scaled by the ratio to the paper's 90k iterations, and the scale's ``base`` overrides are
applied. The run's name is readable and written in paper units (``r50-600-ce-a0.75-s0`` also at ``mini``, where that
model is a ResNet-18 at 128 px); its identity is its resolved config (:func:`build_study` checks that names and
configs are one-to-one, so a model shared by several tables is trained once). The rows themselves, with their manifest
keys, are :mod:`workflow.rows`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retinanet.config import BACKBONE_INPUT, ConfigError, RunConfig, from_dict, merge, to_dict
from retinanet.rundir.identity import OPERATIONAL_FIELDS, value, without
from workflow.rows import ANALYTIC_FIGURES, Row, figure_rows, fmt, table_rows
from workflow.scale import StudyError

PAPER_ITERATIONS = RunConfig().solver.iterations
"""The paper's 1x schedule (90k iterations); a run's schedule is expressed as a multiple of it."""

RUNTIME_FIELDS = tuple(f for f in OPERATIONAL_FIELDS if f != "model.pretrained")
"""The operational fields (:data:`retinanet.identity.OPERATIONAL_FIELDS`: where the data lives and how the job
runs) that a run's config file leaves out, so that changing them changes no file a train job depends on; the train
rule passes today's values with ``--set`` and the threads through OMP_NUM_THREADS (workflow/scripts/launch.py).
``model.pretrained`` stays in the file (it may be the keyword ``none``); its content is part of the run's identity.
:data:`OPERATIONAL_FIELDS` are also the fields a scale may set without declaring a deviation from the paper."""

# --------------------------------------------------------------------------------------------------------------
# Scale translation: paper-unit overrides -> the scale's RunConfig.
# --------------------------------------------------------------------------------------------------------------

PAPER_SOLVER_FIELDS = ("base_lr", "clip_grad_norm")
"""The learning-strategy fields that a row with ``solver.paper_solver: true`` keeps at the paper's values whatever
the scale's ``base`` sets (section 5.1 trains CE 'without any modifications to the initialization or learning
strategy'; a scale's larger lr or gradient clipping would be such modifications)."""


@dataclass(frozen=True)
class PaperRun:
    """A row's overrides parsed once: the validated paper-unit config (a plain dict, never modified), the schedule
    as a multiple of the paper's 90k iterations, the scale jitter on/off and the paper solver on/off."""

    config: dict
    schedule: float
    jitter: bool
    paper_solver: bool


def parse_row(overrides: dict) -> PaperRun:
    """Row overrides -> :class:`PaperRun` (ConfigError naming the key for an invalid field).

    Three row fields are not RunConfig fields: ``solver.schedule`` (a multiple of the paper's 1x schedule),
    ``data.train_min_sizes: jitter`` (the scale's jitter list) and ``solver.paper_solver`` (keep
    :data:`PAPER_SOLVER_FIELDS` at the paper's values); each scale translates them."""
    row = copy.deepcopy(overrides)
    schedule = float(row.get("solver", {}).pop("schedule", 1.0))
    paper_solver = bool(row.get("solver", {}).pop("paper_solver", False))
    jitter = row.get("data", {}).pop("train_min_sizes", None) == "jitter"
    return PaperRun(to_dict(from_dict(row)), schedule, jitter, paper_solver)


def _keeps_paper_solver(scale: dict, run: PaperRun) -> bool:
    """Whether the row asks for the paper's learning strategy and the scale's ``base`` changes it (only then does
    the run differ from the same row without the flag, and get its own name)."""
    solver = (scale.get("base") or {}).get("solver") or {}
    return run.paper_solver and any(f in solver and solver[f] != run.config["solver"][f] for f in PAPER_SOLVER_FIELDS)


def _lookup(table: list[dict], value: Any, where: str) -> dict:
    for entry in table:
        if entry["paper"] == value:
            return entry
    raise StudyError(f"{where}: no entry for paper value {value!r} (have {[e['paper'] for e in table]})")


def resolve(scale: dict, overrides: dict | PaperRun, seed: int, pretraining: int = 0) -> RunConfig:
    """The scale's run config for one row's paper-unit ``overrides``, ``seed`` and pretraining replica (the
    ``pretraining``-th pretrained backbone of its depth, :func:`weights_path`).

    Order: RunConfig's paper defaults <- row overrides (paper units) <- the scale's ``base`` (except
    :data:`PAPER_SOLVER_FIELDS` for a row with ``solver.paper_solver``) <- mapped fields (depth, image scale and max
    size, scale jitter, OHEM batch, iterations = base iterations x schedule multiple, pretrained weights per depth;
    with ``weights.source: msra``, the caffe2 backbone style and its input, :data:`retinanet.config.BACKBONE_INPUT`).
    Raises StudyError/ConfigError naming the key for anything invalid. ``overrides`` may be parsed already
    (:func:`parse_row`).
    """
    run = overrides if isinstance(overrides, PaperRun) else parse_row(overrides)
    paper = copy.deepcopy(run.config)  # merge shares the sections the base leaves alone, and they are written below
    cfg = merge(paper, scale.get("base") or {})
    if run.paper_solver:
        for field in PAPER_SOLVER_FIELDS:
            cfg["solver"][field] = paper["solver"][field]
    maps = scale["maps"]
    depth = _lookup(maps["depth"], paper["model"]["depth"], "maps.depth")
    cfg["model"]["depth"] = depth["ours"]
    image = _lookup(maps["image_scale"], paper["data"]["min_size"], "maps.image_scale")
    cfg["data"]["min_size"], cfg["data"]["max_size"] = image["min_size"], image["max_size"]
    cfg["data"]["train_min_sizes"] = list(maps["jitter"]) if run.jitter else None
    if paper["loss"]["sampling"] == "ohem":
        cfg["loss"]["ohem_batch"] = _lookup(maps["ohem_batch"], paper["loss"]["ohem_batch"],
                                            "maps.ohem_batch")["ours"]
    base_iters = cfg["solver"]["iterations"]
    cfg["solver"]["iterations"] = max(1, round(base_iters * run.schedule))
    weights = scale["weights"]
    if weights["source"] in WEIGHTS_NAMES:
        cfg["model"]["pretrained"] = weights_path(scale, depth["ours"], pretraining)
    elif weights["source"] == "none":
        cfg["model"]["pretrained"] = "none"
    if weights["source"] == "msra":  # Detectron's ResNets: their stride placement and the input they were trained on
        cfg["model"]["backbone_style"] = "caffe2"
        cfg["data"].update(copy.deepcopy(BACKBONE_INPUT["caffe2"]))
    cfg["data"]["root"] = scale["dataset"]["root"]
    cfg["seed"] = seed
    return from_dict(cfg, source=f"config {scale['scale']}")


WEIGHTS_NAMES = {"msra": "msra", "torchvision": "imagenet1k-v1", "pretrain": "pretrain"}
"""``weights.source`` -> the suffix of its cached file ``resnet<depth>-<suffix>.pth``."""


def weights_path(scale: dict, depth: int | str, pretraining: int = 0) -> str:
    """Where the workflow keeps the ResNet-``depth`` start weights: Detectron's MSRA ImageNet ones converted
    (``source: msra``, the paper's) or torchvision's (``source: torchvision``), both downloaded once, or the ones
    pretrained on the embedded data (``source: pretrain``): replica ``pretraining`` > 0 (pretrained with seed
    ``pretraining``, :data:`PRETRAINING_SUFFIX`) is ``resnet<depth>-pretrain-p<k>.pth``."""
    source = scale["weights"]["source"]
    if pretraining and source != "pretrain":
        raise StudyError(f"seeds.pretrainings: weights.source {source!r} has one set of published weights; "
                         f"pretraining replicas need weights.source 'pretrain'")
    suffix = PRETRAINING_SUFFIX.format(k=pretraining) if pretraining else ""
    return str(Path(scale["weights"]["cache"]) / f"resnet{depth}-{WEIGHTS_NAMES[source]}{suffix}.pth")


PRETRAINING_SUFFIX = "-p{k}"
"""Replica ``k`` > 0 of a pretrained backbone (its weights file) and of the runs that start from it (their ids,
:func:`run_id`); replica 0 has no suffix, so a study without replicas names everything as before."""


def paper_units(overrides: dict | PaperRun) -> dict:
    """The row's run config in paper units (no scale applied), as plain dicts, plus the schedule multiple and the
    jitter flag under ``solver.schedule`` / ``data.jitter``: what the run's name is made of."""
    run = overrides if isinstance(overrides, PaperRun) else parse_row(overrides)
    paper = copy.deepcopy(run.config)
    paper["solver"]["schedule"] = run.schedule
    paper["data"]["jitter"] = run.jitter
    return paper


def run_name(overrides: dict | PaperRun, scale: dict | None = None) -> str:
    """Readable name in paper units, e.g. ``r50-600-fl-g2-a0.25``, ``r101-600-ohem13-b128-n0.5``,
    ``r50-600-fls-g2-b1-a0.25``, ``r50-600-fl-g2-a0.25-sc1-ar1``, ``r50-600-ce-a0.5-zinit``,
    ``r101-800-fl-g2-a0.25-jit-1.5x``, and ``r50-600-ce-a0.5-papersgd`` where the row keeps the paper's learning
    strategy against the ``scale``'s changes to it. The seed suffix (``-s0``) is added by :func:`run_id`.
    ``overrides`` may be parsed already (:func:`parse_row`)."""
    run = overrides if isinstance(overrides, PaperRun) else parse_row(overrides)
    p = paper_units(run)
    loss = p["loss"]
    alpha = f"-a{fmt(loss['alpha'])}" if loss["alpha"] is not None else ""
    if loss["sampling"] == "ohem":
        kind = "ohem13" if loss["ohem_pos_fraction"] == 0.25 else "ohem"
        if loss["ohem_pos_fraction"] not in (None, 0.25):
            kind = f"ohem-pf{fmt(loss['ohem_pos_fraction'])}"
        tag = f"{kind}-b{loss['ohem_batch']}-n{fmt(loss['ohem_nms'])}"
        tag += f"-g{fmt(loss['gamma'])}" if loss["gamma"] else ""
        tag += alpha
    elif loss["cls"] == "focal_star":
        tag = f"fls-g{fmt(loss['gamma'])}-b{fmt(loss['beta'])}{alpha}"
    elif loss["gamma"] == 0:
        tag = f"ce{alpha}"
    else:
        tag = f"fl-g{fmt(loss['gamma'])}{alpha}"
    parts = [f"r{p['model']['depth']}-{p['data']['min_size']}", tag]
    n_sc, n_ar = p["anchors"]["num_scales"], len(p["anchors"]["aspect_ratios"])
    default_anchors = RunConfig().anchors
    if (n_sc, p["anchors"]["aspect_ratios"]) != (default_anchors.num_scales, default_anchors.aspect_ratios):
        parts.append(f"sc{n_sc}-ar{n_ar}")
    if p["model"]["cls_bias_init"] != RunConfig().model.cls_bias_init:
        parts.append(f"{p['model']['cls_bias_init'][0]}init")
    if p["data"]["jitter"]:
        parts.append("jit")
    if p["solver"]["schedule"] != 1.0:
        parts.append(f"{fmt(p['solver']['schedule'])}x")
    if scale is not None and _keeps_paper_solver(scale, run):
        parts.append("papersgd")
    return "-".join(parts)


def run_id(name: str, seed: int, pretraining: int = 0) -> str:
    """A run directory's name: the run's name, its pretraining replica if not the first, and its seed
    (``r50-600-fl-g2-a0.25-s0``, ``r50-600-fl-g2-a0.25-p1-s0``)."""
    replica = PRETRAINING_SUFFIX.format(k=pretraining) if pretraining else ""
    return f"{name}{replica}-s{seed}"


def replicate_key(seed: int, pretraining: int = 0) -> str:
    """The manifest's key of one replicate of a row (its ``metrics``/``timing`` maps): the seed (``"0"``) on the
    first pretraining, ``"p1-s0"`` on replica 1 (analysis.seeds reads it back)."""
    return f"p{pretraining}-s{seed}" if pretraining else str(seed)


# --------------------------------------------------------------------------------------------------------------
# The study: every run with its resolved config, and the manifest.
# --------------------------------------------------------------------------------------------------------------

@dataclass
class Study:
    """All runs of one scale and the manifest that maps tables/figures to them.

    ``runs``: run id (name + seed) -> resolved RunConfig (without runtime fields).
    ``timed``: run ids whose inference time is measured (Table 1e). ``loss_samples``: run ids sampled for Fig. 4.
    ``manifest``: the study.json content (paths relative to the working directory).
    """

    scale: dict
    runs: dict[str, RunConfig]
    timed: list[str]
    loss_samples: list[str]
    manifest: dict

    def run_config(self, rid: str) -> dict:
        """The config file content for run ``rid`` (:data:`RUNTIME_FIELDS` dropped)."""
        return without(to_dict(self.runs[rid]), RUNTIME_FIELDS)


def runtime_options(run: RunConfig) -> list[str]:
    """The run's :data:`RUNTIME_FIELDS` but ``threads`` as ``train --set`` overrides, ``KEY=VALUE`` with the value
    in JSON (which ``--set`` parses back as YAML): what the train rule adds to the run's config file."""
    d = to_dict(run)
    return [f"{f}={json.dumps(value(d, f))}" for f in RUNTIME_FIELDS if f != "threads"]


def paths(scale: dict) -> dict[str, str]:
    """Path patterns of every file the study produces, relative to the working directory. ``{rid}`` is a run id."""
    w = scale["workdir"]
    r = scale["results"]
    return {
        "run_config": f"{w}/configs/{{rid}}.yaml",
        "run_dir": f"{w}/runs/{{rid}}",
        "result": f"{w}/runs/{{rid}}/result.json",
        "eval_dir": f"{w}/eval/{{rid}}",
        "metrics": f"{w}/eval/{{rid}}/metrics.json",
        "timing": f"{w}/timing/{{rid}}.json",
        "loss_samples": f"{w}/loss_samples/{{rid}}.npz",
        "manifest": f"{w}/study.json",
        "table": f"{r}/tables/table_{{table}}",
        "figure": f"{r}/figures/{{fig}}",
        "report": f"{r}/REPORT.md",
    }


def _is_headline(scale: dict, table: str, key: str | None) -> bool:
    s = scale["seeds"]
    return table in s.get("headline_tables", []) or key in s.get("headline_rows", {}).get(table, [])


def seeds_for(scale: dict, table: str, key: str | None = None) -> list[int]:
    """Seeds of one table (or of one of its rows): the headline seeds for tables/rows listed as headline, else the
    sweep seeds."""
    s = scale["seeds"]
    return list(s["headline"] if _is_headline(scale, table, key) else s["sweep"])


def replicates_for(scale: dict, table: str, key: str | None = None) -> list[tuple[int, int]]:
    """``(pretraining, seed)`` of every run of one row: the headline rows cross ``seeds.pretrainings`` (default
    ``[0]``: the one pretrained backbone per depth) with their seeds, so that their spread samples the pretraining
    as well as the run seed; every other row runs its seeds on pretraining 0."""
    pretrainings = scale["seeds"].get("pretrainings", [0]) if _is_headline(scale, table, key) else [0]
    return [(p, seed) for p in pretrainings for seed in seeds_for(scale, table, key)]


def entry_run_ids(entry: dict) -> list[str]:
    """Every run id of one manifest entry (a table row or a figure point), in its ``metrics`` order."""
    return list(entry["runs"].values()) if "runs" in entry else [run_id(entry["run"], int(s)) for s in entry["seeds"]]


class _Runs:
    """The runs a study collects, row by row: run id -> resolved config, and where each was first asked for. Names
    and configs must be one-to-one: :meth:`add` refuses one run id with two configs, :meth:`check_distinct` one
    config under two run ids (StudyError naming the rows)."""

    def __init__(self, scale: dict) -> None:
        self.scale = scale
        self.configs: dict[str, RunConfig] = {}
        self.origin: dict[str, str] = {}

    def add(self, row: Row, replicates: list[tuple[int, int]], where: str) -> tuple[str, dict[str, str]]:
        """Resolve ``row`` for each ``(pretraining, seed)``: its run name and :func:`replicate_key` -> run id."""
        try:
            run = parse_row(row.overrides)  # once per row: the name and every replicate's config read it
            name = run_name(run, self.scale)
            configs = [(k, seed, resolve(self.scale, run, seed, k)) for k, seed in replicates]
        except ConfigError as exc:
            raise StudyError(f"{where}: {exc}") from None
        rids = {}
        for k, seed, cfg in configs:
            rid = rids[replicate_key(seed, k)] = run_id(name, seed, k)
            if rid in self.configs and self.configs[rid] != cfg:
                raise StudyError(f"{where}: run {rid} is also {self.origin[rid]} with a different config")
            self.configs.setdefault(rid, cfg)
            self.origin.setdefault(rid, where)
        return name, rids

    def check_distinct(self) -> None:
        by_config: dict[str, str] = {}
        for rid, cfg in self.configs.items():
            blob = json.dumps(to_dict(cfg), sort_keys=True)
            if blob in by_config:
                raise StudyError(f"runs {by_config[blob]} and {rid} have the same config under two names")
            by_config[blob] = rid


def _check_pretrainings(scale: dict) -> None:
    pretrainings = scale["seeds"].get("pretrainings", [0])
    if len(set(pretrainings)) != len(pretrainings) or any(k < 0 for k in pretrainings):
        raise StudyError(f"seeds.pretrainings: {pretrainings} must be distinct replica numbers >= 0")
    if pretrainings != [0] and scale["weights"]["source"] != "pretrain":
        raise StudyError(f"seeds.pretrainings: {pretrainings} needs weights.source 'pretrain' (the DAG pretrains "
                         f"each replica); {scale['weights']['source']!r} has one set of weights per depth")


def _entry(runs: _Runs, table: str, row: Row) -> dict:
    """One manifest entry: a table row (or a Fig. 7 point) with its seeds and the metrics file of each replicate."""
    scale, metrics = runs.scale, paths(runs.scale)["metrics"]
    replicates = replicates_for(scale, table, row.key)
    name, rids = runs.add(row, replicates, f"table {table} row {row.key}")
    out = {"key": row.key, **row.fields, "run": name, "seeds": seeds_for(scale, table, row.key),
           "metrics": {key: metrics.format(rid=rid) for key, rid in rids.items()}}
    if any(k for k, _ in replicates):
        out.update(pretrainings=sorted({k for k, _ in replicates}), runs=rids)
    return out


def _tables(runs: _Runs) -> tuple[dict[str, list], list[str]]:
    """Every table's manifest entries (Table 1b: per gamma, its candidates), and the run ids Table 1e times."""
    timing = paths(runs.scale)["timing"]
    tables: dict[str, list] = {}
    timed: list[str] = []
    for table, rows in table_rows(runs.scale["grids"]).items():
        if table == "1b":
            tables[table] = [{"key": key, "candidates": [_entry(runs, table, c) for c in cands]} for key, cands in rows]
            continue
        tables[table] = [_entry(runs, table, row) for row in rows]
        if table == "1e":
            for e in tables[table]:
                rids = dict(zip(e["metrics"], entry_run_ids(e)))
                e["timing"] = {key: timing.format(rid=rid) for key, rid in rids.items()}
                timed += list(rids.values())
    return tables, timed


def _figures(runs: _Runs) -> tuple[dict, str]:
    """The figures' manifest entries, and the run id that Fig. 4 samples (the first headline seed's default run)."""
    p = paths(runs.scale)
    figs = figure_rows(runs.scale["grids"])
    seed = runs.scale["seeds"]["headline"][0]
    name, rids = runs.add(figs["fig4"], [(0, seed)], "figure 4")
    rid = rids[replicate_key(seed)]
    figures = {
        "fig4": {"run": name, "seed": seed, "samples": p["loss_samples"].format(rid=rid),
                 "metrics": p["metrics"].format(rid=rid)},
        "fig7": [_entry(runs, "fig7", row) for row in figs["fig7"]],
        "fig2": {"table": "1e"},
    }
    for fig in ANALYTIC_FIGURES:
        figures[fig] = {"analytic": True}
    return figures, rid


def build_study(scale: dict) -> Study:
    """Expand a scale config into its runs and manifest. Raises StudyError if two rows give one run name with
    different configs, or two names the same config."""
    from_dict(scale.get("base") or {}, source=f"config {scale['scale']}: base")  # a typo there names `base`
    _check_pretrainings(scale)
    runs = _Runs(scale)
    tables, timed = _tables(runs)
    figures, fig4_rid = _figures(runs)
    runs.check_distinct()
    p = paths(scale)
    seeds = scale["seeds"]
    manifest = {
        "scale": scale["scale"],
        "seeds": sorted({s for k in ("headline", "sweep") for s in seeds[k]}),
        "seed_sets": {"headline": seeds["headline"], "sweep": seeds["sweep"],
                      "pretrainings": seeds.get("pretrainings", [0])},
        "deviations": scale.get("deviations", []),
        "hardware": scale.get("hardware"),
        "runs": {rid: {"dir": p["run_dir"].format(rid=rid), "config": p["run_config"].format(rid=rid),
                       "result": p["result"].format(rid=rid), "metrics": p["metrics"].format(rid=rid)}
                 for rid in sorted(runs.configs)},
        "tables": tables,
        "figures": figures,
    }
    return Study(scale=scale, runs=runs.configs, timed=sorted(set(timed)), loss_samples=[fig4_rid],
                 manifest=manifest)
