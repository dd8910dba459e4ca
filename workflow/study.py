"""The study: which trained models make up each table and figure of the paper, at any scale.

Pure Python, no Snakemake. The Snakefile and the tests import it.

Runs are described in the paper's own terms first: a *paper-unit* run config is :class:`retinanet.config.RunConfig`'s
defaults (which are the paper's values) plus the few fields a table row changes (Table 1a's alpha = .75 row only
sets ``loss.gamma = 0`` and ``loss.alpha = 0.75``). A scale then translates it (:func:`resolve`): the paper's
backbone depth and image scale are mapped through the scale's tables (50 -> 18 at ``mini``), the schedule is
scaled by the ratio to the paper's 90k iterations, and the scale's ``base`` overrides are applied. The run's name
is readable and written in paper units (``r50-600-ce-a0.75-s0`` also at ``mini``, where that model is a
ResNet-18 at 128 px); its identity is its resolved config (:func:`build_study` checks that names and configs are
one-to-one, so a model shared by several tables is trained once).

Table keys follow the study manifest format of the team contract (numbers as in the paper with Python float repr,
integers without ``.0``): ``alpha=0.75``, ``gamma=2``, ``scales=3,ratios=3``, ``method=OHEM,batch=128,nms=0.7``,
``depth=50,scale=600``, ``RetinaNet-101-800``, ``loss=FL*,gamma=2,beta=1``, ``init=zero``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retinanet.config import BACKBONE_INPUT, ConfigError, RunConfig, from_dict, merge, to_dict
from retinanet.rundir.identity import OPERATIONAL_FIELDS, value, without

PAPER_ITERATIONS = RunConfig().solver.iterations
"""The paper's 1x schedule (90k iterations); a run's schedule is expressed as a multiple of it."""

RUNTIME_FIELDS = tuple(f for f in OPERATIONAL_FIELDS if f != "model.pretrained")
"""The operational fields (:data:`retinanet.identity.OPERATIONAL_FIELDS`: where the data lives and how the job
runs) that a run's config file leaves out, so that changing them changes no file a train job depends on; the train
rule passes today's values with ``--set`` and the threads through OMP_NUM_THREADS (workflow/scripts/launch.py).
``model.pretrained`` stays in the file (it may be the keyword ``none``); its content is part of the run's identity.
:data:`OPERATIONAL_FIELDS` are also the fields a scale may set without declaring a deviation from the paper."""

TABLES = ("1a", "1b", "1c", "1d", "1e", "2", "3", "5.1")
FIGURES = ("fig1", "fig2", "fig4", "fig5", "fig6", "fig7")
ANALYTIC_FIGURES = ("fig1", "fig5", "fig6")
"""Figures computed from the loss formulas alone (no trained model)."""

RATIOS = {1: [1.0], 3: [0.5, 1.0, 2.0]}
"""Table 1c's '#ar' column: 1 -> the square anchor only; 3 -> {1:2, 1:1, 2:1}."""


class StudyError(ConfigError):
    """The study configuration is inconsistent (one-line message naming the key)."""


def fmt(x: float | int) -> str:
    """A number as the manifest keys and run names write it: ``2.0 -> '2'``, ``0.75 -> '0.75'``, ``1.5 -> '1.5'``."""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


# --------------------------------------------------------------------------------------------------------------
# The study in paper units: table/figure -> rows -> run overrides of RunConfig's paper defaults.
# --------------------------------------------------------------------------------------------------------------

def focal(gamma: float, alpha: float | None) -> dict:
    """eq. 5 (gamma = 0: alpha-balanced CE, eq. 3)."""
    return {"loss": {"cls": "focal", "gamma": float(gamma), "alpha": alpha}}


def focal_star(gamma: float, beta: float, alpha: float = 0.25) -> dict:
    """FL* (appendix A, eq. 7-8); the paper used alpha = .25 in all FL* experiments (Fig. 7 caption text)."""
    return {"loss": {"cls": "focal_star", "gamma": float(gamma), "beta": float(beta), "alpha": alpha}}


def ohem(batch: int, nms: float, pos_fraction: float | None) -> dict:
    """Table 1d's OHEM baseline: plain CE (gamma 0, no alpha) on a mined minibatch of ``batch`` anchors per image
    after NMS at ``nms``; ``pos_fraction`` 0.25 is 'OHEM 1:3'."""
    loss = {"cls": "focal", "gamma": 0.0, "alpha": None, "sampling": "ohem", "ohem_batch": batch,
            "ohem_nms": float(nms), "ohem_pos_fraction": pos_fraction}
    return {"loss": loss}


def backbone(depth: int, scale: int) -> dict:
    """ResNet-``depth``-FPN at a ``scale``-pixel shorter side (paper units; the scale maps both)."""
    return {"model": {"depth": depth}, "data": {"min_size": scale}}


def anchors(num_scales: int, num_ratios: int) -> dict:
    """Table 1c: ``num_scales`` octave scales 2^(k/num_scales) and 1 or 3 aspect ratios."""
    if num_ratios not in RATIOS:
        raise StudyError(f"grids.table1c: {num_ratios} aspect ratios is not one of {sorted(RATIOS)}")
    return {"anchors": {"num_scales": num_scales, "aspect_ratios": RATIOS[num_ratios]}}


def _overrides(*parts: dict) -> dict:
    out: dict = {}
    for part in parts:
        out = merge(out, part)
    return out


DEFAULT_FL = focal(2, 0.25)
"""The paper's default loss: gamma 2, alpha .25 (section 5.1, 'Focal Loss')."""
CE_BEST = focal(0, 0.75)
"""Table 1a's best alpha-balanced CE (31.1 AP), which is Table 3's CE row."""
PAPER_SOLVER = {"solver": {"paper_solver": True}}
"""Row override: keep the paper's learning strategy (:data:`PAPER_SOLVER_FIELDS`) whatever the scale's base sets."""
CE_STANDARD = focal(0, 0.5)
"""Section 5.1's 'standard CE': alpha = .5 is unweighted CE up to a constant factor; with the prior init it is the
30.2 AP of both section 5.1 and Table 1a's alpha = .5 row, so those share one model (unless a scale changes the
learning strategy, which section 5.1's rows keep: ``PAPER_SOLVER``)."""


@dataclass(frozen=True)
class Row:
    """One row of a table (or one point of a figure): its manifest key, its run (paper-unit overrides of
    RunConfig) and extra fields copied into the manifest (e.g. ``{"alpha": 0.25}``)."""

    key: str
    overrides: dict
    fields: dict = dataclasses.field(default_factory=dict)


def table_rows(grids: dict) -> dict[str, list[Row] | list[tuple[str, list[Row]]]]:
    """Every table's rows, from the scale's ``grids`` (paper units).

    Table 1b is a list of ``(key, candidates)``: one candidate run per alpha of the grid; the analysis picks the
    best alpha per gamma, as the paper did.
    """
    t: dict[str, Any] = {}
    t["1a"] = [Row(f"alpha={fmt(a)}", focal(0, a), {"alpha": a}) for a in grids["table1a_alpha"]]
    t["1b"] = [(f"gamma={fmt(g)}", [Row(f"gamma={fmt(g)},alpha={fmt(a)}", focal(g, a), {"gamma": g, "alpha": a})
                                    for a in grids["table1b_alpha"]]) for g in grids["table1b_gamma"]]
    t["1c"] = [Row(f"scales={s},ratios={r}", anchors(s, r), {"scales": s, "ratios": r})
               for s, r in grids["table1c"]]
    deep = grids["deep_depth"]
    abl = grids["ablation_scale"]
    t["1d"] = [Row(f"method=OHEM,batch={b},nms={fmt(n)}", _overrides(backbone(deep, abl), ohem(b, n, None)),
                   {"method": "OHEM", "batch": b, "nms": n})
               for n in grids["table1d_ohem_nms"] for b in grids["table1d_batch"]]
    t["1d"] += [Row(f"method=OHEM 1:3,batch={b},nms={fmt(n)}", _overrides(backbone(deep, abl), ohem(b, n, 0.25)),
                    {"method": "OHEM 1:3", "batch": b, "nms": n})
                for n in grids["table1d_ohem13_nms"] for b in grids["table1d_batch"]]
    t["1d"].append(Row("method=FL", _overrides(backbone(deep, abl), DEFAULT_FL), {"method": "FL"}))
    t["1e"] = [Row(f"depth={d},scale={s}", _overrides(backbone(d, s), DEFAULT_FL), {"depth": d, "scale": s})
               for d in grids["table1e_depth"] for s in grids["table1e_scale"]]
    big = max(grids["table1e_scale"])
    t["2"] = [Row(f"RetinaNet-{deep}-{big}", _overrides(backbone(deep, big), DEFAULT_FL,
                                                         {"data": {"train_min_sizes": "jitter"}},
                                                         {"solver": {"schedule": grids["long_schedule"]}}),
                  {"depth": deep, "scale": big, "jitter": True, "schedule": grids["long_schedule"]})]
    t["3"] = [Row("loss=CE", CE_BEST, {"loss": "CE"}),
              Row("loss=FL,gamma=2", DEFAULT_FL, {"loss": "FL", "gamma": 2})]
    t["3"] += [Row(f"loss=FL*,gamma={fmt(g)},beta={fmt(b)}", focal_star(g, b), {"loss": "FL*", "gamma": g, "beta": b})
               for g, b in ((2, 1), (4, 0))]
    # Section 5.1 trains CE "without any modifications to the initialization or learning strategy": both rows keep
    # the paper's lr and no gradient clipping, whatever a scale's base sets (PAPER_SOLVER_FIELDS).
    t["5.1"] = [Row("init=zero", _overrides(CE_STANDARD, {"model": {"cls_bias_init": "zero"}}, PAPER_SOLVER),
                    {"init": "zero"}),
                Row("init=prior", _overrides(CE_STANDARD, PAPER_SOLVER), {"init": "prior"})]
    return t


def figure_rows(grids: dict) -> dict[str, Any]:
    """Figures that need trained models: Fig. 4 (one model) and Fig. 7 (the FL* gamma x beta grid)."""
    fig4 = Row("fig4", _overrides(backbone(grids["deep_depth"], grids["ablation_scale"]), DEFAULT_FL))
    fig7 = [Row(f"gamma={fmt(g)},beta={fmt(b)}", focal_star(g, b), {"gamma": g, "beta": b})
            for g in grids["fig7_gamma"] for b in grids["fig7_beta"]]
    return {"fig4": fig4, "fig7": fig7}


# --------------------------------------------------------------------------------------------------------------
# Scale translation: paper-unit overrides -> the scale's RunConfig.
# --------------------------------------------------------------------------------------------------------------

PAPER_SOLVER_FIELDS = ("base_lr", "clip_grad_norm")
"""The learning-strategy fields that a row with ``solver.paper_solver: true`` keeps at the paper's values whatever
the scale's ``base`` sets (section 5.1 trains CE 'without any modifications to the initialization or learning
strategy'; a scale's larger lr or gradient clipping would be such modifications)."""


def _split(overrides: dict) -> tuple[dict, float, bool, bool]:
    """Row overrides -> (validated paper-unit config dict, schedule multiple of 90k, scale jitter on/off, paper
    solver on/off).

    Three row fields are not RunConfig fields: ``solver.schedule`` (a multiple of the paper's 1x schedule),
    ``data.train_min_sizes: jitter`` (the scale's jitter list) and ``solver.paper_solver`` (keep
    :data:`PAPER_SOLVER_FIELDS` at the paper's values); each scale translates them."""
    row = copy.deepcopy(overrides)
    schedule = float(row.get("solver", {}).pop("schedule", 1.0))
    paper_solver = bool(row.get("solver", {}).pop("paper_solver", False))
    jitter = row.get("data", {}).pop("train_min_sizes", None) == "jitter"
    return to_dict(from_dict(row)), schedule, jitter, paper_solver


def _keeps_paper_solver(scale: dict, overrides: dict) -> bool:
    """Whether the row asks for the paper's learning strategy and the scale's ``base`` changes it (only then does
    the run differ from the same row without the flag, and get its own name)."""
    paper, _, _, paper_solver = _split(overrides)
    solver = (scale.get("base") or {}).get("solver") or {}
    return paper_solver and any(f in solver and solver[f] != paper["solver"][f] for f in PAPER_SOLVER_FIELDS)


def _lookup(table: list[dict], value: Any, where: str) -> dict:
    for entry in table:
        if entry["paper"] == value:
            return entry
    raise StudyError(f"{where}: no entry for paper value {value!r} (have {[e['paper'] for e in table]})")


def resolve(scale: dict, overrides: dict, seed: int, pretraining: int = 0) -> RunConfig:
    """The scale's run config for one row's paper-unit ``overrides``, ``seed`` and pretraining replica (the
    ``pretraining``-th pretrained backbone of its depth, :func:`weights_path`).

    Order: RunConfig's paper defaults <- row overrides (paper units) <- the scale's ``base`` (except
    :data:`PAPER_SOLVER_FIELDS` for a row with ``solver.paper_solver``) <- mapped fields (depth, image scale and max
    size, scale jitter, OHEM batch, iterations = base iterations x schedule multiple, pretrained weights per depth;
    with ``weights.source: msra``, the caffe2 backbone style and its input, :data:`retinanet.config.BACKBONE_INPUT`).
    Raises StudyError/ConfigError naming the key for anything invalid.
    """
    paper, schedule, jitter, paper_solver = _split(overrides)
    cfg = merge(paper, scale.get("base") or {})
    if paper_solver:
        for field in PAPER_SOLVER_FIELDS:
            cfg["solver"][field] = paper["solver"][field]
    maps = scale["maps"]
    depth = _lookup(maps["depth"], paper["model"]["depth"], "maps.depth")
    cfg["model"]["depth"] = depth["ours"]
    image = _lookup(maps["image_scale"], paper["data"]["min_size"], "maps.image_scale")
    cfg["data"]["min_size"], cfg["data"]["max_size"] = image["min_size"], image["max_size"]
    cfg["data"]["train_min_sizes"] = list(maps["jitter"]) if jitter else None
    if paper["loss"]["sampling"] == "ohem":
        cfg["loss"]["ohem_batch"] = _lookup(maps["ohem_batch"], paper["loss"]["ohem_batch"],
                                            "maps.ohem_batch")["ours"]
    base_iters = cfg["solver"]["iterations"]
    cfg["solver"]["iterations"] = max(1, round(base_iters * schedule))
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


def paper_units(overrides: dict) -> dict:
    """The row's run config in paper units (no scale applied), as plain dicts, plus the schedule multiple and the
    jitter flag under ``solver.schedule`` / ``data.jitter``: what the run's name is made of."""
    paper, schedule, jitter, _ = _split(overrides)
    paper["solver"]["schedule"] = schedule
    paper["data"]["jitter"] = jitter
    return paper


def run_name(overrides: dict, scale: dict | None = None) -> str:
    """Readable name in paper units, e.g. ``r50-600-fl-g2-a0.25``, ``r101-600-ohem13-b128-n0.5``,
    ``r50-600-fls-g2-b1-a0.25``, ``r50-600-fl-g2-a0.25-sc1-ar1``, ``r50-600-ce-a0.5-zinit``,
    ``r101-800-fl-g2-a0.25-jit-1.5x``, and ``r50-600-ce-a0.5-papersgd`` where the row keeps the paper's learning
    strategy against the ``scale``'s changes to it. The seed suffix (``-s0``) is added by :func:`run_id`."""
    p = paper_units(overrides)
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
    if scale is not None and _keeps_paper_solver(scale, overrides):
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


def build_study(scale: dict) -> Study:
    """Expand a scale config into its runs and manifest. Raises StudyError if two rows give one run name with
    different configs, or two names the same config."""
    grids = scale["grids"]
    p = paths(scale)
    from_dict(scale.get("base") or {}, source=f"config {scale['scale']}: base")  # a typo there names `base`
    pretrainings = scale["seeds"].get("pretrainings", [0])
    if len(set(pretrainings)) != len(pretrainings) or any(k < 0 for k in pretrainings):
        raise StudyError(f"seeds.pretrainings: {pretrainings} must be distinct replica numbers >= 0")
    if pretrainings != [0] and scale["weights"]["source"] != "pretrain":
        raise StudyError(f"seeds.pretrainings: {pretrainings} needs weights.source 'pretrain' (the DAG pretrains "
                         f"each replica); {scale['weights']['source']!r} has one set of weights per depth")
    runs: dict[str, RunConfig] = {}
    origin: dict[str, str] = {}

    def add(row: Row, seed: int, where: str, pretraining: int = 0) -> str:
        try:
            name = run_name(row.overrides, scale)
            cfg = resolve(scale, row.overrides, seed, pretraining)
        except ConfigError as exc:
            raise StudyError(f"{where}: {exc}") from None
        rid = run_id(name, seed, pretraining)
        if rid in runs and runs[rid] != cfg:
            raise StudyError(f"{where}: run {rid} is also {origin[rid]} with a different config")
        runs.setdefault(rid, cfg)
        origin.setdefault(rid, where)
        return name

    def entry(table: str, row: Row) -> dict:
        reps = replicates_for(scale, table, row.key)
        name = ""
        for k, seed in reps:
            name = add(row, seed, f"table {table} row {row.key}", k)
        rids = {replicate_key(s, k): run_id(name, s, k) for k, s in reps}
        out = {"key": row.key, **row.fields, "run": name, "seeds": seeds_for(scale, table, row.key),
               "metrics": {key: p["metrics"].format(rid=rid) for key, rid in rids.items()}}
        if any(k for k, _ in reps):
            out.update(pretrainings=sorted({k for k, _ in reps}), runs=rids)
        return out

    tables: dict[str, list] = {}
    timed: list[str] = []
    for table, rows in table_rows(grids).items():
        if table == "1b":
            tables[table] = [{"key": key, "candidates": [entry(table, c) for c in cands]} for key, cands in rows]
            continue
        tables[table] = [entry(table, row) for row in rows]
        if table == "1e":
            for e in tables[table]:
                rids = dict(zip(e["metrics"], entry_run_ids(e)))
                e["timing"] = {key: p["timing"].format(rid=rid) for key, rid in rids.items()}
                timed += list(rids.values())

    figs = figure_rows(grids)
    fig4_seed = scale["seeds"]["headline"][0]
    fig4_name = add(figs["fig4"], fig4_seed, "figure 4")
    fig4_rid = run_id(fig4_name, fig4_seed)
    figures = {
        "fig4": {"run": fig4_name, "seed": fig4_seed, "samples": p["loss_samples"].format(rid=fig4_rid),
                 "metrics": p["metrics"].format(rid=fig4_rid)},
        "fig7": [entry("fig7", row) for row in figs["fig7"]],
        "fig2": {"table": "1e"},
    }
    for fig in ANALYTIC_FIGURES:
        figures[fig] = {"analytic": True}

    by_config: dict[str, str] = {}
    for rid, cfg in runs.items():
        blob = json.dumps(to_dict(cfg), sort_keys=True)
        if blob in by_config:
            raise StudyError(f"runs {by_config[blob]} and {rid} have the same config under two names")
        by_config[blob] = rid

    manifest = {
        "scale": scale["scale"],
        "seeds": sorted({s for k in ("headline", "sweep") for s in scale["seeds"][k]}),
        "seed_sets": {"headline": scale["seeds"]["headline"], "sweep": scale["seeds"]["sweep"],
                      "pretrainings": scale["seeds"].get("pretrainings", [0])},
        "deviations": scale.get("deviations", []),
        "hardware": scale.get("hardware"),
        "runs": {rid: {"dir": p["run_dir"].format(rid=rid), "config": p["run_config"].format(rid=rid),
                       "result": p["result"].format(rid=rid), "metrics": p["metrics"].format(rid=rid)}
                 for rid in sorted(runs)},
        "tables": tables,
        "figures": figures,
    }
    return Study(scale=scale, runs=runs, timed=sorted(set(timed)), loss_samples=[fig4_rid], manifest=manifest)
