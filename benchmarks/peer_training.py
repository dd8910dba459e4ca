"""Learning-speed cross-check: ours and torchvision's RetinaNet trained side by side on the same run.

A detector that learns slowly may be a slow setting (data, schedule, initialization) or a defect. This check tells
the two apart: it trains the peer of :mod:`benchmarks.peer` (torchvision's ``RetinaNet`` with our architecture and
torchvision's own matching and loss code) and ours on the same run config, with

- the same initial weights (the same seed, then the same construction as :func:`retinanet.engine.train.train`: the
  pretrained backbone, the prior init, the same random head),
- the same batches (our loader and sampler: the same images, scale jitter and flips, in the same order),
- the same SGD, lr schedule (warmup and steps) and gradient clipping,
- the loss and matching choices torchvision hard-codes (:func:`benchmarks.peer.comparable_config`) on both sides,

then evaluates both with our evaluator (the same pycocotools AP). The two runs differ only in the implementation
(and in float rounding, which makes their trajectories drift apart after the first steps), so equal APs within seed
noise say that our training learns as fast as torchvision's on that setting.

``python -m benchmarks.peer_training --config RUN.yaml --out DIR [--set key=value ...]`` writes ``DIR/ours`` and
``DIR/peer`` (run directories in the training layout, so ``python -m retinanet evaluate --run DIR/peer`` works on
either), their evaluations under ``DIR/{ours,peer}/eval`` and ``DIR/comparison.json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.peer import build_peer, comparable_config, peer_key
from retinanet import atomic
from retinanet.config import RunConfig, load, to_dict
from retinanet.config_parsing import parse_overrides
from retinanet.data.dataset import build_dataset, build_train_loader, check_num_classes
from retinanet.engine import checkpoint
from retinanet.engine.evaluate import evaluate_run
from retinanet.engine.solver import WarmupMultiStepSchedule, build_optimizer, plan_batch
from retinanet.engine.train import seed_everything, train
from retinanet.modeling.detector import RetinaNet, build_model
from retinanet.rundir.folder import CONFIG, FINAL, LOG, RESULT


def ours_state_dict(peer_state: dict[str, torch.Tensor], ours: RetinaNet, head_convs: int
                    ) -> dict[str, torch.Tensor]:
    """The peer's weights under our names (the inverse of :func:`benchmarks.peer.peer_state_dict`); the buffers the
    peer does not have (``fg_ema``) are taken from ``ours``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in ours.state_dict().items():
        name = peer_key(key, head_convs)
        out[key] = value.clone() if name is None else peer_state[name].clone()
    return out


def _peer_passes(peer: torch.nn.Module, batches: Iterator, accumulation_steps: int) -> torch.Tensor:
    """One optimizer step's forward/backward passes of the peer, gradients accumulated: the mean classification and
    box losses ``[2]`` (float64)."""
    parts = torch.zeros(2, dtype=torch.float64)
    for _ in range(accumulation_steps):
        images, targets, _ = next(batches)
        losses = peer(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        ((losses["classification"] + losses["bbox_regression"]) / accumulation_steps).backward()
        parts += torch.stack([losses["classification"].detach(), losses["bbox_regression"].detach()]).double()
    return parts / accumulation_steps


def _log_line(path: Path, done: int, window: list[torch.Tensor], lr: float) -> None:
    """Append the mean losses of the steps since the last line (``window``, each ``[2]``) to the log."""
    mean = torch.stack(window).mean(0)
    with open(path, "a") as f:
        f.write(json.dumps({"iteration": done, "loss_cls": mean[0].item(), "loss_box": mean[1].item(),
                            "loss": mean.sum().item(), "lr": lr}) + "\n")


def train_peer(cfg: RunConfig, out: str | Path) -> dict[str, Any]:
    """Train torchvision's RetinaNet on ``cfg`` (single process, CPU) into the run directory ``out``.

    ``cfg`` must already hold the peer's loss choices (:func:`benchmarks.peer.comparable_config`). Writes
    ``config.resolved.yaml``, ``log.jsonl`` (iteration, losses, lr; every ``solver.log_period`` steps),
    ``model_final.pt`` (our parameter names, so our evaluator loads it) and ``result.json`` last; a non-finite loss
    stops the run as ``diverged``, as in :func:`retinanet.engine.train.train`. Returns ``result.json``'s content.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (RESULT, FINAL, LOG):
        (out / name).unlink(missing_ok=True)
    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    plan = plan_batch(cfg.solver, world_size=1)
    # The order of train.py's _train: seed, dataset, model; so the peer starts from our run's initial weights.
    seed_everything(cfg.seed)
    dataset = build_dataset(cfg.data, train=True)
    check_num_classes(dataset, cfg.model.num_classes)
    ours = build_model(cfg)
    peer = build_peer(ours, cfg)
    optimizer = build_optimizer(peer, cfg.solver)  # our training's SGD over the trainable parameters
    schedule = WarmupMultiStepSchedule(cfg.solver, plan.lr)
    loader = build_train_loader(cfg, dataset, world_size=1, rank=0, accumulation_steps=plan.accumulation_steps,
                                start_iter=0)
    batches = iter(loader)
    atomic.write_text(out / CONFIG, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    status, stop_iter, window = "completed", cfg.solver.iterations, []
    peer.train()
    for it in range(cfg.solver.iterations):
        lr = schedule.apply(optimizer, it)
        optimizer.zero_grad(set_to_none=True)
        parts = _peer_passes(peer, batches, plan.accumulation_steps)
        if not torch.isfinite(parts).all():
            status, stop_iter = "diverged", it + 1
            break
        if cfg.solver.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(peer.parameters(), cfg.solver.clip_grad_norm)
        optimizer.step()
        window.append(parts)
        done = it + 1
        if done % cfg.solver.log_period == 0 or done == cfg.solver.iterations:
            _log_line(out / LOG, done, window, lr)
            window = []
    wall_s = time.perf_counter() - t_start
    if status == "completed":
        weights = ours_state_dict(peer.state_dict(), ours, cfg.model.head_convs)
        checkpoint.save({"model": weights, "config": to_dict(cfg), "iteration": stop_iter}, out / FINAL)
    result = {"status": status, "iteration": stop_iter, "wall_s": wall_s, "batch": plan.to_dict(),
              "implementation": "torchvision.models.detection.RetinaNet"}
    atomic.write_json(out / RESULT, result)
    return result


def compare(cfg: RunConfig, out: str | Path) -> dict[str, Any]:
    """Train and evaluate ours and the peer on ``cfg`` with the peer's loss choices; write and return
    ``comparison.json``: per side the AP metrics, the training status and wall time."""
    out = Path(out)
    cfg = dataclasses.replace(comparable_config(copy.deepcopy(cfg)), device="cpu", precision="fp32",
                              channels_last=False)
    summary: dict[str, Any] = {"config": to_dict(cfg)}
    for side in ("ours", "peer"):
        result = train(cfg, out / side) if side == "ours" else train_peer(cfg, out / side)
        metrics = evaluate_run(out / side, out / side / "eval")
        summary[side] = {"status": result["status"], "iteration": result["iteration"],
                         "train_wall_s": round(result["wall_s"], 1),
                         **{k: metrics[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}}
    atomic.write_json(out / "comparison.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer_training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="run config YAML (e.g. work/mini/configs/RUN.yaml)")
    parser.add_argument("--out", required=True, help="folder for ours/, peer/ and comparison.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, as `retinanet train --set` (repeatable)")
    args = parser.parse_args(argv)
    summary = compare(load(args.config, parse_overrides(args.set)), args.out)
    for side in ("ours", "peer"):
        s = summary[side]
        print(f"{side}: {s['status']} at iteration {s['iteration']}, {s['train_wall_s']} s, AP {s['AP']:.2f} "
              f"(AP50 {s['AP50']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
