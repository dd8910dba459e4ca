"""The training loop: ``python -m retinanet train --config RUN.yaml --out RUNDIR [--resume auto]``.

RUNDIR after a run::

    config.resolved.yaml   the full RunConfig
    provenance.json        git commit, packages, host, device (with the TF32 switches and, on CUDA, cuDNN
                           autotuning), batch plan, precision, data report
    log.jsonl              one JSON object per logging step (retinanet.engine.log_window.LOG_KEYS)
    checkpoints/last.pt    periodic training state (model, optimizer, schedule, fp16 loss scale, iteration, RNG
                           states), kept only while the run is unfinished (deleted once a completed run has its
                           model_final.pt)
    model_final.pt         the trained weights (completed runs only)
    snapshots/             with solver.snapshot_period: the weights every N iterations, kept
                           (retinanet.rundir.snapshots)
    job.lock               held by the training job's rank 0 while it runs (retinanet.rundir.lock)
    run.json               the run's identity (retinanet.rundir.identity) and, once finished, a copy of its result
    attempts.json          every training job on the run: host, iterations, seconds, how it ended
                           (retinanet.rundir.attempts)
    result.json            written last: {"status": "completed" | "diverged", "iteration", "wall_s" (summed over
                           the attempts), "attempts", "batch", ...}

One optimizer step = ``accumulation_steps`` forward/backward passes of ``images_per_process`` images on each of
``world_size`` processes (:func:`retinanet.engine.solver.plan_batch`). The model's forward gives the head outputs and
the criterion (:mod:`retinanet.modeling.criterion`) their normalized loss (``loss.normalizer``); the loop divides by
the accumulation steps and DDP averages over processes, so the gradient is the mean over the effective batch's
micro-batches whatever the number of processes.

Divergence: if the loss of a step is not finite on any process, the step is not applied, the run stops and
``result.json`` says ``diverged`` with that step's number (1-based ``iteration``); the process exits 0 and no
``model_final.pt`` is written (the paper reports such runs, e.g. CE without the prior init, as diverged / 0 AP).
Weights are checked to be finite before every checkpoint and at the end, so no checkpoint holds NaN/inf weights.

Resume (``--resume auto``): model, optimizer, schedule, iteration, RNG states and the data stream position are
restored from ``checkpoints/last.pt``; the data order and augmentation are a function of (seed, position)
(:class:`retinanet.data.sampler.TrainBatchSampler`), so on CPU a killed and resumed run ends bitwise equal to an
uninterrupted one. The checkpoint holds every process's RNG states, so a run also resumes on another number of
processes (a rank without a saved state is seeded from (seed, iteration, rank)).

Stopping (:mod:`retinanet.engine.preemption`): on SIGTERM or SIGUSR1, and shortly before a SLURM job's time limit, every
process finishes the current iteration, the checkpoint is saved and the process exits with status 75
(:data:`retinanet.engine.preemption.RETRY_EXIT`); Snakemake retries the job, which resumes there.

A finished run is reused when its identity (scientific config and input files, :mod:`retinanet.rundir.identity`) is
unchanged, whatever its operational fields (data root, workers, checkpoint period...); another identity retrains,
the old folder content moved to ``RUNDIR.previous`` and the changed fields logged
(:func:`retinanet.rundir.record.decide`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from retinanet import atomic
from retinanet.config import ConfigError, RunConfig, load, to_dict
from retinanet.config_parsing import parse_overrides
from retinanet.data.dataset import build_dataset, build_train_loader, check_num_classes, check_train_images
from retinanet.engine import checkpoint, distributed, preemption
from retinanet.engine.log_window import LogWindow
from retinanet.engine.precision import autocast, grad_scaler, set_cudnn_benchmark, set_tf32
from retinanet.engine.solver import BatchPlan, WarmupMultiStepSchedule, build_optimizer, plan_batch
from retinanet.modeling.detector import build_model
from retinanet.rundir import attempts, identity, lock, provenance, record
from retinanet.rundir.folder import CONFIG, FINAL, LAST, LOG, PROVENANCE, RESULT, prepare, truncate_log
from retinanet.rundir.snapshots import snapshot_iterations, snapshot_path

STATE_KEYS = ("model", "optimizer", "schedule", "iteration", "rng", "config", "wall_s")


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's RNGs (model init and anything else drawing from the global RNGs)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            diff = _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if diff:
                return diff
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def _params_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def train(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train one run into ``out_dir``; return the content of ``result.json``. Joins a torchrun job if present.
    Rank 0 holds the run folder's lock throughout (:mod:`retinanet.rundir.lock`: a second job there is refused)."""
    out = Path(out_dir)
    fresh = not out.exists()
    info, device = distributed.init(cfg.device)
    try:
        with lock.hold(out) if info.is_main else contextlib.nullcontext():
            with preemption.StopRequest() as stop:
                return _train(cfg, out, resume, info, device, stop)
    except Exception:
        # A job that fails before its first checkpoint (bad data, say) leaves no folder it created behind: nothing
        # in it is a result, and a half-written folder would look like a run.
        if fresh and info.is_main and not (out / LAST).exists() and not (out / FINAL).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        distributed.shutdown()


def _train(cfg: RunConfig, out: Path, resume: bool, info: distributed.DistInfo, device: torch.device,
           stop: preemption.StopRequest) -> dict:
    """One job on the run folder: reuse a finished run, or build, restore, train and finish it."""
    t_start = time.perf_counter()
    _set_backends(cfg)
    plan = plan_batch(cfg.solver, info.world_size)
    ident = identity.identity(cfg) if info.is_main else {}
    if info.is_main:
        prepare(out, cfg, ident, resume)
    distributed.barrier()
    previous = record.read(out)
    if previous and previous.get("result"):  # only a reused run's record holds a result at this point
        return previous["result"]
    trainer = Trainer(cfg, out, info, device, plan, t_start)
    if resume and (out / LAST).exists():
        trainer.restore(out / LAST)
    trainer.begin()
    status, stop_iter = trainer.loop(stop)
    return trainer.finish(status, stop_iter, ident, stop)


def _set_backends(cfg: RunConfig) -> None:
    """Threads, TF32 and cuDNN autotuning as the run config says (:mod:`retinanet.engine.precision`)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_tf32(cfg.allow_tf32)
    set_cudnn_benchmark(cfg.cudnn_benchmark)


class Trainer:
    """The training state of one job and its steps: :meth:`restore`, :meth:`begin`, then :meth:`loop`, whose
    iterations are :meth:`run_step` (forward and backward of the effective batch), :meth:`apply_step` (the SGD update),
    :meth:`log` and :meth:`save` (checkpoint, snapshot), and :meth:`finish`.

    Built (as the run has always been: same seed, same order of random draws): the training set, the model, its
    optimizer, the lr schedule and the fp16 loss scaler."""

    def __init__(self, cfg: RunConfig, out: Path, info: distributed.DistInfo, device: torch.device,
                 plan: BatchPlan, t_start: float) -> None:
        self.cfg, self.out, self.info, self.device, self.plan, self.t_start = cfg, out, info, device, plan, t_start
        seed_everything(cfg.seed)
        self.dataset = build_dataset(cfg.data, train=True)
        check_num_classes(self.dataset, cfg.model.num_classes)
        check_train_images(self.dataset, cfg.solver.images_per_process)
        model = build_model(cfg).to(device)
        self.model = model.to(memory_format=torch.channels_last) if cfg.channels_last else model
        self.criterion = self.model.criterion  # outputs -> losses (retinanet.modeling.criterion)
        self.optimizer = build_optimizer(self.model, cfg.solver)
        self.schedule = WarmupMultiStepSchedule(cfg.solver, plan.lr)
        self.scaler = grad_scaler(cfg.precision, device)  # fp16: loss scaling; else a pass-through
        self.start_iter, self.wall_before = 0, 0.0
        self.attempt: attempts.Attempt | None = None  # rank 0's record of this job (retinanet.rundir.attempts)
        self.timer: Any = None  # rank 0's alarm before the job's time limit (retinanet.engine.preemption)
        self.snapshots = set(snapshot_iterations(cfg.solver))

    def restore(self, path: Path) -> None:
        """Model, optimizer, schedule, loss scale, iteration, wall time and this rank's RNG states from ``path``,
        a checkpoint of the same scientific config."""
        cfg, info = self.cfg, self.info
        state = checkpoint.load(path)
        checkpoint.require(state, path, STATE_KEYS)
        diff = _first_difference(identity.scientific(state["config"]), identity.scientific(to_dict(cfg)))
        if diff:
            raise ConfigError(f"{path}: written by a different scientific config ({diff}); use a new --out or "
                              f"no --resume")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):  # fp16 runs; a disabled scaler's state is empty
            self.scaler.load_state_dict(state["scaler"])
        self.start_iter, self.wall_before = int(state["iteration"]), float(state["wall_s"])
        if not checkpoint.set_rng_state(state["rng"], rank=info.rank, seed=cfg.seed, iteration=self.start_iter):
            writers = len(state["rng"].get("ranks", [0]))
            print(f"train: rank {info.rank}: {path} was written by {writers} processes and holds no RNG "
                  f"state for this one; seeded from (seed, iteration, rank)", file=sys.stderr)

    def begin(self) -> None:
        """Rank 0 writes the resolved config and the provenance, cuts the log back to the restored iteration, opens
        this job's attempt and arms the stop before the time limit; then every rank wraps the model for DDP and
        builds its data loader, which starts at the restored position of the data stream."""
        cfg, out, info, device = self.cfg, self.out, self.info, self.device
        if info.is_main:
            atomic.write_text(out / CONFIG, yaml.safe_dump(to_dict(cfg), sort_keys=False))
            report = self.dataset.report()
            print(f"data: {json.dumps(report)}", file=sys.stderr)
            atomic.write_json(out / PROVENANCE, provenance.collect(
                device, world_size=info.world_size, batch=self.plan.to_dict(), precision=cfg.precision,
                channels_last=cfg.channels_last, threads=torch.get_num_threads(), resumed_from=self.start_iter,
                data=report))
            truncate_log(out / LOG, self.start_iter)
            self.attempt = attempts.Attempt(out, self.start_iter, info.world_size, started=self.t_start)
            at, why = preemption.deadline()
            print(f"train: stop time: {time.ctime(at) if at else 'none'} ({why})", file=sys.stderr, flush=True)
            self.timer = preemption.arm_deadline(at) if at is not None else None
        distributed.barrier()
        self.ddp = distributed.wrap(self.model, info, device)
        self.loader = build_train_loader(cfg, self.dataset, world_size=info.world_size, rank=info.rank,
                                         accumulation_steps=self.plan.accumulation_steps, start_iter=self.start_iter,
                                         pin_memory=device.type == "cuda")

    def loop(self, stop: preemption.StopRequest) -> tuple[str, int]:
        """Train from the restored iteration to the last one; returns how it ended, ``completed``, ``diverged`` or
        ``stopped`` (a stop request on any rank), and at which iteration (1-based)."""
        bar = tqdm(total=self.cfg.solver.iterations, initial=self.start_iter,
                   disable=not (self.info.is_main and sys.stderr.isatty()), dynamic_ncols=True)
        ended = self._iterate(iter(self.loader), stop, bar)
        bar.close()
        if self.timer is not None:
            self.timer.cancel()
        return ended

    def _iterate(self, batches: Iterator, stop: preemption.StopRequest, bar: tqdm) -> tuple[str, int]:
        iterations = self.cfg.solver.iterations
        window = LogWindow(self.plan, self.info.world_size)
        self.model.train()
        for it in range(self.start_iter, iterations):
            lr = self.schedule.apply(self.optimizer, it)
            sums = self.run_step(batches, stop)
            if sums[3].item() > 0:
                return "diverged", it + 1
            self.apply_step()
            window.add(sums)
            bar.update(1)
            done = it + 1
            if done % self.cfg.solver.log_period == 0 or done == iterations:
                self.log(window.line(done, lr), bar)
            stopping = sums[4].item() > 0 and done < iterations  # a signal on any rank: all stop after this step
            if not self.save(done, stopping):
                return "diverged", done
            if stopping:
                return "stopped", done
        return "completed", iterations

    def run_step(self, batches: Iterator, stop: preemption.StopRequest) -> torch.Tensor:
        """Forward and backward of one effective batch (``accumulation_steps`` micro-batches; DDP averages the
        gradients over processes at the last). Returns ``[5]`` float64 summed over the processes: loss_cls,
        loss_box and num_fg summed over the micro-batches, whether a loss was not finite, whether a stop was asked."""
        cfg, info, plan = self.cfg, self.info, self.plan
        self.optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(5, dtype=torch.float64, device=self.device)  # loss_cls, loss_box, num_fg, non-finite, stop
        for step in range(plan.accumulation_steps):
            images, targets, _ = next(batches)
            images, targets = to_device(images, targets, self.device, channels_last=cfg.channels_last)
            last = step == plan.accumulation_steps - 1
            with self.ddp.no_sync() if info.enabled and not last else contextlib.nullcontext():
                with autocast(self.device, cfg.precision):
                    losses = self.criterion(self.ddp(images), targets, fg_ema=self.model.fg_ema)
                loss = (losses["loss_cls"] + losses["loss_box"]) / plan.accumulation_steps
                self.scaler.scale(loss).backward()
            sums[:3] += torch.stack([losses["loss_cls"].detach(), losses["loss_box"].detach(),
                                     losses["num_fg"].detach()]).double()
        sums[3] = (~torch.isfinite(sums[:2])).any().double()
        sums[4] = float(stop.requested)
        distributed.all_reduce_sum(sums)
        return sums

    def apply_step(self) -> None:
        """The SGD update from the accumulated gradients: clipped if asked, skipped by the fp16 scaler on overflow."""
        if self.cfg.solver.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients (fp16)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.solver.clip_grad_norm)
        self.scaler.step(self.optimizer)  # fp16: skipped when a gradient overflowed
        self.scaler.update()

    def log(self, line: dict[str, Any], bar: tqdm) -> None:
        """Show a log line on the progress bar; rank 0 appends it to ``log.jsonl``."""
        bar.set_postfix(loss=f"{line['loss']:.4f}", lr=f"{line['lr']:.2e}")
        if self.info.is_main:
            with open(self.out / LOG, "a") as f:
                f.write(json.dumps(line) + "\n")

    def save(self, done: int, stopping: bool) -> bool:
        """The checkpoint every ``checkpoint_period`` iterations and before a stop, and the weight snapshots
        (:mod:`retinanet.rundir.snapshots`), on rank 0; False, saving nothing, where the weights are not finite."""
        cfg, info, iterations = self.cfg, self.info, self.cfg.solver.iterations
        if (done % cfg.solver.checkpoint_period == 0 or stopping) and done < iterations:
            if not _params_finite(self.model):  # never checkpoint non-finite weights
                return False
            rng = distributed.all_gather_object(checkpoint.rng_state())  # every rank's, so any world size resumes
            if info.is_main:
                _save_state(self.out / LAST, self.model, self.optimizer, self.schedule, self.scaler, done, cfg, rng,
                            self.wall_before + time.perf_counter() - self.t_start)
                self.attempt.record(done)
        if done in self.snapshots:  # weights kept for AP-against-iteration curves
            if not _params_finite(self.model):
                return False
            if info.is_main:
                checkpoint.save({"model": self.model.state_dict(), "config": to_dict(cfg), "iteration": done},
                                snapshot_path(self.out, done))
        return True

    def finish(self, status: str, stop_iter: int, ident: dict, stop: preemption.StopRequest) -> dict[str, Any]:
        """End the job: a stopped one records its attempt and raises :class:`~retinanet.engine.preemption.Stopped`
        (to be retried); otherwise rank 0 writes the final weights of a completed run, ``run.json`` and
        ``result.json``, whose content is returned."""
        cfg, out, info = self.cfg, self.out, self.info
        if status == "stopped":
            signal_name = stop.signal_name or "a signal to another process"
            if info.is_main:
                self.attempt.record(stop_iter, end=f"stopped by {signal_name}")
            distributed.barrier()
            raise preemption.Stopped(signal_name, stop_iter)
        if status == "completed" and not _params_finite(self.model):
            status = "diverged"
        wall_s, tries = self.wall_before + time.perf_counter() - self.t_start, 1
        if info.is_main:  # the run's time over every attempt (retinanet.rundir.attempts)
            wall_s, tries = self.attempt.record(stop_iter, end=status), self.attempt.entry["attempt"]
        result = {"status": status, "iteration": stop_iter, "wall_s": wall_s, "attempts": tries,
                  "batch": self.plan.to_dict(), "precision": cfg.precision, "channels_last": cfg.channels_last}
        if info.is_main:
            if status == "completed":
                checkpoint.save({"model": self.model.state_dict(), "config": to_dict(cfg),
                                 "iteration": cfg.solver.iterations}, out / FINAL)
            record.write(out, ident, result)  # before result.json: a rerun reuses the run even without it
            atomic.write_json(out / RESULT, result)
            if status == "completed":  # only resuming needs the training state; it is 2/3 of a run's disk
                (out / LAST).unlink(missing_ok=True)
            print(f"train: {status} at iteration {stop_iter} in {wall_s:.1f} s -> {out}", file=sys.stderr)
        distributed.barrier()
        return result


def to_device(images: torch.Tensor, targets: list[dict[str, torch.Tensor]], device: torch.device, *,
              channels_last: bool = False) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """A batch (images ``[N, 3, H, W]``, per image ``boxes [M, 4]`` and ``labels [M]``) on ``device``. The copies
    are asynchronous (``non_blocking``: from the loader's pinned memory on CUDA, they overlap the queued work
    instead of waiting for it); the images in channels-last layout if asked."""
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, [{"boxes": t["boxes"].to(device, non_blocking=True),
                     "labels": t["labels"].to(device, non_blocking=True)} for t in targets]


def _save_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                schedule: WarmupMultiStepSchedule, scaler: torch.amp.GradScaler, iteration: int, cfg: RunConfig,
                rng: list[dict], wall_s: float) -> None:
    """The training state at ``iteration``; ``rng``: every rank's RNG states (:func:`checkpoint.rng_state`)."""
    checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "schedule": schedule.state_dict(), "scaler": scaler.state_dict(), "iteration": iteration,
                     "rng": {"ranks": rng},
                     "config": to_dict(cfg), "wall_s": wall_s}, path)


# --------------------------------------------------------------------------------------------------------------
# CLI


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train one run", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="run config YAML (see retinanet/config.py)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set solver.iterations=100 (repeatable)")
    p.add_argument("--resume", choices=["auto", "no"], default="no",
                   help="auto: reuse a finished run of the same identity (scientific config and input files), "
                        "else continue from RUNDIR/checkpoints/last.pt if it exists; a run of another identity is "
                        "moved to RUNDIR.previous and retrained. no: train from scratch")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    cfg = load(args.config, parse_overrides(args.set))
    try:
        train(cfg, args.out, resume=args.resume == "auto")
    except preemption.Stopped as exc:
        print(f"train: {exc}", file=sys.stderr, flush=True)
        return preemption.RETRY_EXIT
    return 0


