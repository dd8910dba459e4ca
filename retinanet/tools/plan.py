"""The bill of a study before launching it: ``python -m retinanet plan [--scale paper] [--targets 1a 3] [--gpus 8]``.

For one scale (``config/<scale>.yaml`` expanded by the study definition, ``workflow/study.py``) and a choice of
targets (table ids ``1a 1b 1c 1d 1e 2 3 5.1`` and figures ``fig1 fig2 fig4 fig5 fig6 fig7``; default all), it
prints the training runs those targets need, the GPU-hours per target and in total, and the wall time on N GPUs.

Cost model (training only: evaluation, inference timing and loss samples take one GPU for minutes per run):

- A run costs ``iterations x images per iteration x t`` GPU-seconds, ``t`` being the training time of one image
  on one GPU for the run's ResNet depth and image scale. That assumes data parallelism without loss, so a run's
  GPU-seconds do not depend on how many GPUs share it (with fewer GPUs it accumulates gradients, same work).
- ``t`` comes from one figure per depth (:class:`ImageTime`), scaled by image area: ``t(s) = t(s0) (s / s0)^2``
  for shorter sides ``s`` and ``s0`` (with scale jitter, ``s`` is the root mean square of the jitter's sizes: the
  mean area). An approximation: the per-iteration costs that do not shrink with the image (SGD update,
  all-reduce, data loading) make smaller scales cost somewhat more than this says.
- The figure is published (:data:`PUBLISHED`: detectron2's model zoo, 8 V100; for ResNet-50 and -101) or measured
  on this machine's device (``--measure``: a few training steps of the study's run of each depth on synthetic
  images, :mod:`retinanet.tools.probe`).

Shared runs: a run several chosen targets use is trained once. "GPU-h alone" is what a target costs launched by
itself (all its runs); "GPU-h share" splits each run equally among the chosen targets that use it, so the shares
add up to the total, in which every run counts once.

Wall time at N GPUs: every run gets ``g = min(N, gpus per run)`` GPUs (8, the paper's and the train rule's), so
``floor(N / g)`` runs train side by side. The wall time is that of the LPT schedule (longest run first, each run to
the slot that frees up first): a schedule the runs can follow, within 4/3 of the shortest possible and never below
``max(longest run, total / slots)``; Snakemake's own order may differ.
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import torch

from retinanet.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parents[2]  # the checkout: retinanet/tools/plan.py
"""The checkout: ``config/`` and ``workflow/`` (the study definition) live beside the package."""

GPUS = 8
"""Default ``--gpus``: one node of the paper's 8 GPUs."""


class PlanError(ConfigError):
    """A target, scale or figure the plan cannot price (one line naming it)."""


@dataclass(frozen=True)
class ImageTime:
    """Training seconds of one image on one GPU (``seconds``) for ResNet-``depth``-FPN at shorter side
    ``short_side`` px, and where the figure comes from."""

    depth: int
    seconds: float
    short_side: float
    source: str


def rms(sizes: list[int] | tuple[int, ...]) -> float:
    """Root mean square of image sides: the side of the mean area."""
    return math.sqrt(sum(s * s for s in sizes) / len(sizes))


DETECTRON2_SIDES = (640, 672, 704, 736, 768, 800)
"""detectron2's RetinaNet trains with shorter sides sampled from these (``Base-RetinaNet.yaml``, max 1333)."""

PUBLISHED: dict[int, ImageTime] = {
    depth: ImageTime(depth, s_per_iter * 8 / 16, rms(DETECTRON2_SIDES),
                     f"detectron2 MODEL_ZOO.md, {name}: train time {s_per_iter} s/iter on 8 V100 "
                     f"(16 images per iteration, shorter side 640-800 px)")
    for depth, name, s_per_iter in ((50, "retinanet_R_50_FPN_1x", 0.205), (101, "retinanet_R_101_FPN_3x", 0.291))
}
"""The published training speed, one place: detectron2's model zoo (github.com/facebookresearch/detectron2,
MODEL_ZOO.md, RetinaNet table; PyTorch with 8 NVIDIA V100 and NVLink, averaged over the whole training), per image
per GPU (16 images on 8 GPUs: 2 per GPU per iteration). ResNet-101's figure is its 3x schedule's (the table has
no 1x row for it); the schedule does not change the time per iteration."""


def train_short_side(cfg: RunConfig) -> float:
    """The shorter side a run trains at: ``data.min_size``, or the mean area's side of its scale jitter."""
    return rms(cfg.data.train_min_sizes) if cfg.data.train_min_sizes else float(cfg.data.min_size)


@dataclass(frozen=True)
class RunCost:
    """One training run's size and cost."""

    rid: str
    depth: int
    short_side: float
    iterations: int
    images_per_iter: int
    gpu_seconds: float

    def s_per_iter(self, gpus: int) -> float:
        """Wall seconds per iteration on ``gpus`` GPUs."""
        return self.gpu_seconds / self.iterations / gpus


def run_cost(rid: str, cfg: RunConfig, times: dict[int, ImageTime]) -> RunCost:
    """The cost of run ``rid`` (see the module docstring); PlanError if no figure covers its depth."""
    depth = cfg.model.depth
    if depth not in times:
        raise PlanError(f"plan: no iteration time for ResNet-{depth} (run {rid} trains one); figures exist for "
                        f"{', '.join(f'ResNet-{d}' for d in sorted(times))}: use --measure on this device")
    t = times[depth]
    side = train_short_side(cfg)
    per_image = t.seconds * (side / t.short_side) ** 2
    images = cfg.solver.batch_size
    return RunCost(rid, depth, side, cfg.solver.iterations, images, cfg.solver.iterations * images * per_image)


def lpt_makespan(durations: list[float], slots: int) -> float:
    """Wall time of ``durations`` on ``slots`` parallel slots, longest first, each to the earliest free slot."""
    if slots < 1:
        raise PlanError(f"plan: {slots} parallel slots; need at least 1")
    free = [0.0] * min(slots, max(1, len(durations)))
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(free, free[0] + d)
    return max(free)


class WorkflowModules(NamedTuple):
    """The checkout's workflow modules (they are not part of the installed package)."""

    rows: ModuleType
    scale: ModuleType
    study: ModuleType


def workflow_modules() -> WorkflowModules:
    """``workflow.rows``, ``workflow.scale`` and ``workflow.study`` of this checkout."""
    if not (ROOT / "workflow" / "study.py").is_file():
        raise PlanError(f"plan: needs the repository checkout (no workflow/study.py in {ROOT})")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from workflow import rows, scale, study

    return WorkflowModules(rows, scale, study)


def target_names() -> list[str]:
    """Every target: the table ids, then the figures."""
    rows = workflow_modules().rows
    return list(rows.TABLES) + list(rows.FIGURES)


def target_runs(manifest: dict) -> dict[str, list[str]]:
    """Run ids (name + seed) each table and figure needs, from the study manifest; the analytic figures need none.
    Fig. 2 plots Table 1e's runs; Fig. 7 also reads Table 3 (its FL reference), as the workflow's figure rule does."""
    rows, _, study = workflow_modules()

    def ids(entries: list[dict]) -> list[str]:
        out = []
        for entry in entries:
            for cand in entry.get("candidates", [entry]):
                out += study.entry_run_ids(cand)
        return list(dict.fromkeys(out))

    tables = manifest["tables"]
    figures = manifest["figures"]
    out = {table: ids(tables[table]) for table in rows.TABLES}
    for fig in rows.FIGURES:
        if fig in rows.ANALYTIC_FIGURES:
            out[fig] = []
        elif fig == "fig2":
            out[fig] = out[figures["fig2"]["table"]]
        elif fig == "fig4":
            out[fig] = [study.run_id(figures["fig4"]["run"], figures["fig4"]["seed"])]
        else:
            out[fig] = list(dict.fromkeys(ids(figures[fig]) + (out["3"] if fig == "fig7" else [])))
    return out


@dataclass
class Plan:
    """The chosen targets' runs and their costs."""

    scale: str
    targets: dict[str, list[str]]
    """target -> run ids it needs"""
    costs: dict[str, RunCost]
    """run id -> cost, every run of the chosen targets once"""
    times: dict[int, ImageTime]
    gpus: int
    gpus_per_run: int
    snakemake_targets: dict[str, str]

    @property
    def run_gpus(self) -> int:
        """GPUs each run trains on."""
        return min(self.gpus, self.gpus_per_run)

    @property
    def slots(self) -> int:
        """Runs training side by side."""
        return self.gpus // self.run_gpus

    def users(self, rid: str) -> list[str]:
        """The chosen targets that need run ``rid``."""
        return [t for t, rids in self.targets.items() if rid in rids]

    def total_gpu_seconds(self) -> float:
        return sum(c.gpu_seconds for c in self.costs.values())

    def alone_gpu_seconds(self, target: str) -> float:
        return sum(self.costs[r].gpu_seconds for r in self.targets[target])

    def share_gpu_seconds(self, target: str) -> float:
        return sum(self.costs[r].gpu_seconds / len(self.users(r)) for r in self.targets[target])

    def wall_seconds(self, rids: list[str] | None = None) -> float:
        """Wall time of ``rids`` (default: every run) on :attr:`gpus` GPUs (module docstring)."""
        rids = list(self.costs) if rids is None else rids
        if not rids:
            return 0.0
        return lpt_makespan([self.costs[r].gpu_seconds / self.run_gpus for r in rids], self.slots)


def select(scale_cfg: dict, targets: list[str] | None = None) -> tuple[dict[str, RunConfig], dict[str, list[str]]]:
    """The study's run configs (run id -> RunConfig) and the run ids of each chosen target (default all, in the
    study's order); PlanError naming an unknown target."""
    built = workflow_modules().study.build_study(scale_cfg)
    runs = target_runs(built.manifest)
    chosen = list(dict.fromkeys(targets or runs))
    unknown = [t for t in chosen if t not in runs]
    if unknown:
        raise PlanError(f"plan: unknown target {unknown[0]!r} (targets: {' '.join(runs)})")
    return built.runs, {t: runs[t] for t in chosen}


def make_plan(scale_cfg: dict, targets: list[str] | None = None, times: dict[int, ImageTime] | None = None, *,
              gpus: int = GPUS, gpus_per_run: int = GPUS) -> Plan:
    """The plan of ``targets`` (default all) of a loaded scale config, priced with ``times`` (default
    :data:`PUBLISHED`)."""
    rows, _, study = workflow_modules()
    if gpus < 1 or gpus_per_run < 1:
        raise PlanError(f"plan: --gpus {gpus} and --gpus-per-run {gpus_per_run} must be at least 1")
    configs, chosen = select(scale_cfg, targets)
    times = PUBLISHED if times is None else times
    rids = list(dict.fromkeys(r for rs in chosen.values() for r in rs))
    costs = {r: run_cost(r, configs[r], times) for r in rids}
    p = study.paths(scale_cfg)
    snake = {t: (f"{p['table'].format(table=t)}.md" if t in rows.TABLES else f"{p['figure'].format(fig=t)}.png")
             for t in chosen}
    return Plan(scale=scale_cfg["scale"], targets=chosen, costs=costs, times=times, gpus=gpus,
                gpus_per_run=gpus_per_run, snakemake_targets=snake)


def load_scale_config(name: str) -> dict:
    """``config/<name>.yaml`` merged and checked against the workflow's schema, as the Snakefile loads it."""
    scale = workflow_modules().scale
    cfg = scale.load_scale({"scale": name}, ROOT / "config")
    scale.check_config(cfg, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    return cfg


def measure_times(runs: dict[str, RunConfig], device: torch.device, *, warmup: int = 2,
                  steps: int = 5) -> dict[int, ImageTime]:
    """Seconds per training image on ``device`` for each depth among ``runs`` (run id -> config), each measured
    on the run of that depth at its most common image scale (a run without scale jitter where there is one; ties:
    the smaller scale, then the first run id)."""
    from retinanet.engine.precision import set_tf32
    from retinanet.rundir import provenance
    from retinanet.tools import probe

    name = provenance.device_info(device)["name"]
    out = {}
    for depth in sorted({cfg.model.depth for cfg in runs.values()}):
        fixed = sorted(r for r, cfg in runs.items() if cfg.model.depth == depth and not cfg.data.train_min_sizes)
        pool = fixed or sorted(r for r, cfg in runs.items() if cfg.model.depth == depth)
        sides = Counter(runs[r].data.min_size for r in pool)
        side = max(sides, key=lambda s: (sides[s], -s))
        rid = next(r for r in pool if runs[r].data.min_size == side)
        cfg = runs[rid]
        set_tf32(cfg.allow_tf32)
        seconds = probe.seconds_per_image(cfg, device, warmup=warmup, steps=steps)
        h, w = probe.image_shape(cfg)
        out[depth] = ImageTime(depth, seconds, float(side),
                               f"measured on {name}: median of {steps} steps of {rid} on "
                               f"{cfg.solver.images_per_process} synthetic {h}x{w} images, torch {torch.__version__}")
    return out


# --------------------------------------------------------------------------------------------------------------
# Output


def duration(seconds: float) -> str:
    """``0.25 s``, ``45 s``, ``12 min``, ``5.3 h``, ``4.2 d``."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def hours(seconds: float) -> str:
    """GPU-hours with the precision that matters: ``1,234``, ``12.3``, ``0.0042``."""
    h = seconds / 3600
    if h >= 100:
        return f"{h:,.0f}"
    if h >= 0.1:
        return f"{h:.1f}"
    return f"{h:.2g}"


def table(headers: list[str], rows: list[list[str]], fmt: str) -> str:
    """Rows as a Markdown table (``md``) or aligned plain text (``text``)."""
    if fmt == "md":
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(x) for x in col) for col in zip(headers, *rows)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in [headers, *rows])


def render(plan: Plan, fmt: str = "text", runs: bool = True) -> str:
    """The plan as text: how it was priced, one row per target and the total, then (``runs``) one row per run."""
    g = plan.run_gpus
    wall = f"wall at {plan.gpus} GPUs"
    lines = [f"Training bill of the {plan.scale} study: {len(plan.costs)} runs for {len(plan.targets)} targets "
             f"({' '.join(plan.targets)}); training only.", ""]
    for t in sorted(plan.times.values(), key=lambda t: t.depth):
        lines.append(f"- ResNet-{t.depth}: {t.seconds:.4g} s per training image per GPU at {t.short_side:.0f} px "
                     f"({t.source}).")
    lines += ["- Other image scales: times the image area ratio (shorter side squared; an approximation).",
              f"- {plan.gpus} GPUs, {g} per run: {plan.slots} run{'s' if plan.slots > 1 else ''} at a time, "
              "longest first (LPT schedule).",
              ""]
    rows = []
    for target, rids in plan.targets.items():
        shared = sum(1 for r in rids if len(plan.users(r)) > 1)
        rows.append([target, f"`{plan.snakemake_targets[target]}`" if fmt == "md" else plan.snakemake_targets[target],
                     str(len(rids)), str(shared), hours(plan.alone_gpu_seconds(target)),
                     hours(plan.share_gpu_seconds(target)), duration(plan.wall_seconds(rids)) if rids else "-"])
    rows.append(["total", "", str(len(plan.costs)), "", hours(plan.total_gpu_seconds()),
                 hours(plan.total_gpu_seconds()), duration(plan.wall_seconds())])
    lines.append(table(["target", "Snakemake target", "runs", "shared", "GPU-h alone", "GPU-h share", wall], rows,
                       fmt))
    if runs:
        rows = [[rid, str(c.depth), f"{c.short_side:.0f}", f"{c.iterations:,}", str(c.images_per_iter),
                 f"{c.s_per_iter(g):.3g}", hours(c.gpu_seconds), duration(c.gpu_seconds / g),
                 " ".join(plan.users(rid))]
                for rid, c in sorted(plan.costs.items())]
        lines += ["", table(["run", "depth", "px", "iterations", "images/iter", f"s/iter on {g} GPUs", "GPU-h",
                             f"wall on {g} GPUs", "targets"], rows, fmt)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# CLI


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="GPU-hours and wall time of a study's targets, before launching",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="paper", help="config/<scale>.yaml (default: paper)")
    p.add_argument("--targets", nargs="+", default=None, metavar="TARGET",
                   help="table ids (1a 1b 1c 1d 1e 2 3 5.1) and figures (fig1 fig2 fig4 fig5 fig6 fig7); default all")
    p.add_argument("--gpus", type=int, default=GPUS, help=f"GPUs available in all (default {GPUS})")
    p.add_argument("--gpus-per-run", type=int, default=GPUS,
                   help=f"GPUs one training run uses (default {GPUS}, the paper's and the train rule's)")
    p.add_argument("--measure", action="store_true",
                   help="time a few training steps per depth on this device instead of the published figures")
    p.add_argument("--device", default="auto", help="device for --measure: auto, cpu, cuda")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per depth with --measure")
    p.add_argument("--format", choices=("text", "md"), default="text", help="plain text or Markdown tables")
    p.add_argument("--brief", action="store_true", help="only the per-target table, not one row per run")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from retinanet.engine.distributed import resolve_device

    if args.steps < 1:
        raise PlanError(f"plan: --steps {args.steps} must be at least 1")
    scale_cfg = load_scale_config(args.scale)
    times = None
    if args.measure:
        configs, chosen = select(scale_cfg, args.targets)
        used = {r: configs[r] for rids in chosen.values() for r in rids}
        times = measure_times(used, resolve_device(args.device), steps=args.steps)
    plan = make_plan(scale_cfg, args.targets, times, gpus=args.gpus, gpus_per_run=args.gpus_per_run)
    sys.stdout.write(render(plan, args.format, runs=not args.brief))
    return 0
