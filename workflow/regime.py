"""This study's addition (issue 18), not a paper table: FL against alpha-CE across the positive rate per
classification output, from ``mini``'s imbalance (~1e-3) towards COCO's (~1e-5).

The paper's thesis (sections 1 and 3) is that the extreme foreground-background imbalance of dense detectors makes
cross entropy fail and that the focal loss fixes it. The committed ``mini`` study has alpha-CE ahead of FL, at a
positive rate per output ~90x milder than COCO's (docs/scales.md). This experiment moves the rate: each *rate* is a
dataset variant that ``make-dataset`` generates with the options of the scale config (``--classes``, ``--objects``,
the canvas; docs/dataset.md, "Imbalance"), and at each rate three *arms* train with the scale's base settings
(:data:`ARMS`): FL (gamma 2, alpha .25), alpha-CE (alpha .75, the paper's prior pi = .01) and alpha-CE with the prior
set to the variant's measured positive rate (Chen et al.'s optimal bias initialization). The mildest and the most
extreme rate get ``seeds.ends`` and keep weight snapshots every ``snapshot_period`` iterations for AP-against-
iteration curves; the others get ``seeds.middle``.

Pure Python, no Snakemake: the Snakefile builds ``REGIME`` with :func:`build_regime`; ``workflow/rules/regime.smk``
runs it (``snakemake regime``); ``analysis/regime.py`` makes its table, figures and report section from the manifest
(:attr:`Regime.manifest`). The scale config's optional ``regime`` section::

    regime:
      seeds: {ends: [0, 1, 2], middle: [0, 1]}
      snapshot_period: 250
      datasets:                       # one per rate; args: make-dataset options (train and val required)
        - {rate: 1.0e-3, measured: 9.18e-4, args: {train: 2000, val: 500, classes: 6, objects: [1, 6], size: 128}}
        - ...

``rate`` is the target, ``measured`` the rate that ``anchor-stats --train`` measured on the variant's training
split with the arms' config (the prior arm's pi; the DAG measures it again and the table shows both).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

from retinanet.config import RunConfig, from_dict, to_dict
from retinanet.rundir.identity import without
from retinanet.rundir.snapshots import snapshot_iterations
from retinanet.synthetic.scene import DatasetSpec
from workflow.rows import CE_BEST, DEFAULT_FL
from workflow.scale import StudyError
from workflow.study import RUNTIME_FIELDS, paths, resolve, run_id


@dataclass(frozen=True)
class Arm:
    """One loss of the experiment: ``key`` (in run names), ``label`` (table and figures), the paper-unit loss
    overrides, and whether its prior pi is the variant's measured positive rate."""

    key: str
    label: str
    overrides: dict
    prior_from_rate: bool = False


ARMS = (
    Arm("fl", "FL (γ 2, α .25)", DEFAULT_FL),
    Arm("ce", "α-CE (α .75), π .01", CE_BEST),
    Arm("ce-prior", "α-CE (α .75), π = rate", CE_BEST, prior_from_rate=True),
)
"""FL as the paper's default; alpha-CE as Table 1a's best with the paper's prior; alpha-CE with the prior at the
measured positive rate (the head's ``model.prior_prob``, section 4.1's pi)."""

CE_ARMS = tuple(a.key for a in ARMS if a.key != "fl")
"""The CE arms: 'best CE' at a rate is the one with the higher mean AP."""


@dataclass(frozen=True)
class Variant:
    """One rate: its dataset variant (``args``: make-dataset options) and where it lives."""

    tag: str
    rate: float
    measured: float
    args: dict
    root: str

    @property
    def num_classes(self) -> int:
        return int(self.args.get("classes", DatasetSpec.num_classes))

    @property
    def image_size(self) -> int:
        return int(self.args.get("size", self.args.get("image_size", DatasetSpec.image_size)))


def rate_tag(rate: float) -> str:
    """A rate in run names and folders: ``3e-05`` -> ``pr3e-05``."""
    return f"pr{rate:.0e}"


def dataset_options(args: dict) -> str:
    """make-dataset options from a mapping: ``{objects: [1, 6], min_small_side: 0.65}`` ->
    ``--objects 1 6 --min-small-side 0.65``."""
    parts = []
    for key, value in args.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        parts.append(" ".join([f"--{key.replace('_', '-')}", *(str(v) for v in values)]))
    return " ".join(parts)


@dataclass
class Regime:
    """The experiment at one scale: its variants, runs (run id -> resolved RunConfig) and manifest."""

    variants: list[Variant]
    runs: dict[str, RunConfig]
    data_of: dict[str, str]
    manifest: dict

    def run_config(self, rid: str) -> dict:
        """The config file content for run ``rid`` (:data:`workflow.study.RUNTIME_FIELDS` dropped)."""
        return without(to_dict(self.runs[rid]), RUNTIME_FIELDS)

    def variant(self, tag: str) -> Variant:
        for v in self.variants:
            if v.tag == tag:
                return v
        raise StudyError(f"regime: no dataset variant {tag!r} (have {[v.tag for v in self.variants]})")


def regime_paths(scale: dict) -> dict[str, str]:
    """Path patterns of the experiment's own files (the runs use :func:`workflow.study.paths`)."""
    w, r = scale["workdir"], scale["results"]
    return {
        "data": f"{w}/regime/data/{{tag}}",
        "snapshot_metrics": f"{w}/eval/{{rid}}/iter_{{iteration}}/metrics.json",
        "anchor_stats": f"{w}/anchor-stats/{{rid}}.json",
        "manifest": f"{w}/regime/regime.json",
        "table": f"{r}/tables/table_imbalance",
        "figure": f"{r}/figures/fig_imbalance",
        "curves": f"{r}/figures/fig_imbalance_curves",
        "section": f"{r}/regime.md",
    }


def _variants(scale: dict) -> list[Variant]:
    section = scale["regime"]
    out = []
    for i, d in enumerate(section["datasets"]):
        where = f"config {scale['scale']}: regime.datasets[{i}]"
        if not 0 < d["rate"] < 1 or not 0 < d["measured"] < 1:
            raise StudyError(f"{where}: rate {d['rate']!r} and measured {d['measured']!r} must lie in (0, 1)")
        if "train" not in d["args"] or "val" not in d["args"]:
            raise StudyError(f"{where}: args need 'train' and 'val' (images per split), got {sorted(d['args'])}")
        tag = rate_tag(d["rate"])
        out.append(Variant(tag, float(d["rate"]), float(d["measured"]), dict(d["args"]),
                           regime_paths(scale)["data"].format(tag=tag)))
    tags = [v.tag for v in out]
    if len(set(tags)) != len(tags) or len(out) < 2:
        raise StudyError(f"config {scale['scale']}: regime.datasets: need >= 2 distinct rates, got {tags}")
    return sorted(out, key=lambda v: -v.rate)


def _resolve(scale: dict, variant: Variant, arm: Arm, seed: int, snapshots: int | None) -> RunConfig:
    """The arm's run at the ablation setting of the scale, on the variant: K classes, the variant's canvas as the
    image size (max size scaled alike), its data root, pi = measured rate for the prior arm, snapshots if asked."""
    cfg = to_dict(resolve(scale, copy.deepcopy(arm.overrides), seed))
    data = cfg["data"]
    if variant.image_size != data["min_size"]:
        data["max_size"] = round(data["max_size"] * variant.image_size / data["min_size"])
        data["min_size"] = variant.image_size
    data["root"] = variant.root
    cfg["model"]["num_classes"] = variant.num_classes
    if arm.prior_from_rate:
        cfg["model"]["prior_prob"] = variant.measured
    cfg["solver"]["snapshot_period"] = snapshots
    return from_dict(cfg, source=f"config {scale['scale']}: regime {variant.tag} {arm.key}")


def build_regime(scale: dict) -> Regime:
    """The experiment's variants, runs and manifest; an empty Regime when the scale has no ``regime`` section."""
    if not scale.get("regime"):
        return Regime([], {}, {}, {})
    section = scale["regime"]
    variants = _variants(scale)
    ends = {variants[0].tag, variants[-1].tag}
    p, rp = paths(scale), regime_paths(scale)
    runs: dict[str, RunConfig] = {}
    data_of: dict[str, str] = {}
    rates = []
    for v in variants:
        end = v.tag in ends
        seeds = list(section["seeds"]["ends" if end else "middle"])
        arms = {}
        for arm in ARMS:
            name = f"regime-{v.tag}-{arm.key}"
            snapshots = section["snapshot_period"] if end else None
            entry = {"label": arm.label, "run": name, "seeds": seeds, "metrics": {}, "curve": {}}
            for seed in seeds:
                rid = run_id(name, seed)
                cfg = runs[rid] = _resolve(scale, v, arm, seed, snapshots)
                data_of[rid] = v.root
                entry["prior"] = cfg.model.prior_prob
                entry["metrics"][str(seed)] = p["metrics"].format(rid=rid)
                if end:
                    entry["curve"][str(seed)] = {
                        str(it): rp["snapshot_metrics"].format(rid=rid, iteration=it)
                        for it in snapshot_iterations(cfg.solver)}
                    entry["curve"][str(seed)][str(cfg.solver.iterations)] = p["metrics"].format(rid=rid)
            arms[arm.key] = entry
        first = run_id(f"regime-{v.tag}-fl", seeds[0])
        rates.append({"tag": v.tag, "rate": v.rate, "measured": v.measured, "num_classes": v.num_classes,
                      "image_size": v.image_size, "dataset": v.root, "args": v.args, "end": v.tag in ends,
                      "anchor_stats": rp["anchor_stats"].format(rid=first), "arms": arms})
    manifest = {"scale": scale["scale"], "arms": {a.key: a.label for a in ARMS}, "ce_arms": list(CE_ARMS),
                "iterations": next(iter(runs.values())).solver.iterations, "rates": rates}
    json.dumps(manifest)  # plain JSON, or fail here
    return Regime(variants, runs, data_of, manifest)


def snapshot_targets(regime: Regime) -> list[str]:
    """Every snapshot metrics file of the curves (the final iteration's is the run's metrics.json)."""
    out = []
    for rate in regime.manifest.get("rates", []):
        for arm in rate["arms"].values():
            for by_iteration in arm["curve"].values():
                out += [f for f in by_iteration.values() if "/iter_" in f]
    return out


def variant_of(regime: Regime, rid: str) -> Variant:
    """The variant a regime run trains on."""
    root = regime.data_of[rid]
    return next(v for v in regime.variants if v.root == root)
