"""The GPU hot path in one command: ``python -m benchmarks.gpu_check [--toy]`` (under 8 minutes on one GPU).

On a CUDA device it runs, ours against torchvision's RetinaNet on the same card (both built with the same weights,
:mod:`benchmarks.peer`; the same protocol as ``python -m benchmarks``: interleaved calls, medians, here with a
``torch.cuda.synchronize`` closing every call):

- a training step, ResNet-50-FPN (C=256, 4 head convs, 80 classes), 2 images of 800 x 800 px;
- the focal loss, forward + backward, 100k anchors x 80 classes, against ``torchvision.ops.sigmoid_focal_loss``
  (:mod:`benchmarks.focal`): time, and equal values and gradients;
- inference with post-processing, batch 1, 600 x 600 px, dense candidates;
- a short training of the paper study's default FL run (``config/paper.yaml``'s ResNet-50-FPN, its settings and
  lr per image) on one fixed synthetic batch of 2 images at its 600 px scale: 30 SGD steps, whose loss must fall;
  in fp32, and again in each mixed precision (``precision: bf16`` where the GPU has bf16, ``fp16`` with its
  GradScaler: the numeric check of both).

The comparisons run in the paper's fp32 (TF32 off, as ``allow_tf32: false``) with cuDNN autotuning on (as
``cudnn_benchmark: true``). It prints one Markdown table, headed by the device, the torch, CUDA and cuDNN versions
and the focal-loss kernel that runs there (:func:`retinanet.modeling.losses.fused_kernel`), and exits 1 if a check fails
(values differ, or the loss did not fall).

Without CUDA (or with ``--toy``) the same code runs at toy sizes on the CPU (ResNet-18, 128 px, a few
repetitions): a check of the script, not a measurement (``tests/test_gpu_check.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks import detector, focal, harness
from retinanet.config import BACKBONE_INPUT, RunConfig
from retinanet.engine.precision import set_cudnn_benchmark, set_tf32
from retinanet.modeling import losses
from retinanet.tools import probe
from retinanet.tools.plan import workflow_modules


@dataclass(frozen=True)
class Sizes:
    """What each check runs at."""

    train: detector.Setting
    focal: tuple[int, int]
    """anchors, classes"""
    infer: detector.Setting
    paper_iterations: int
    repeats: int
    """timed repetitions per side (training steps; inference and the focal loss take 3x as many)"""
    toy: bool


FULL = Sizes(train=detector.r50_setting(800, 2), focal=(100_000, 80), infer=detector.r50_setting(600, 1),
             paper_iterations=30, repeats=10, toy=False)
TOY = Sizes(train=detector.Setting("toy: R-18-FPN C=32 x1, 128 px", 18, 32, 1, 6, 128, 2),
            focal=(20_000, 8), infer=detector.Setting("toy: R-18-FPN C=32 x1, 128 px", 18, 32, 1, 6, 128, 1),
            paper_iterations=12, repeats=2, toy=True)

PRECISIONS = ("fp32", "bf16", "fp16")
"""The paper-config training runs in each (:func:`precisions`)."""


@dataclass
class Check:
    """One row of the table."""

    check: str
    setting: str
    peer: str
    ours: str
    result: str
    ok: bool | None = None
    """None: a measurement without a pass/fail criterion."""

    @property
    def verdict(self) -> str:
        return "-" if self.ok is None else ("ok" if self.ok else "**FAILED**")


def synced(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """``fn`` followed by waiting for the device, so that wall time covers the queued GPU work."""
    sync = probe.synchronizer(device)

    def call() -> None:
        fn()
        sync()
    return call


def _timing_check(name: str, setting: str, t: harness.Timing, images: int | None = None) -> Check:
    pr = t.pair_ratios
    if images:
        peer, ours = (f"{images / statistics.median(x):.3g} img/s" for x in (t.peer, t.ours))
    else:
        peer, ours = harness.ms(t.peer), harness.ms(t.ours)
    return Check(name, setting, peer, ours, f"{t.ratio:.2f}x (per repetition {min(pr):.2f}-{max(pr):.2f})")


def check_train(s: Sizes, device: torch.device) -> Check:
    """One SGD step of ours and of torchvision's RetinaNet on the same batch (:func:`detector.train_steps`)."""
    ours, peer, cfg = detector.build_pair(s.train)
    ours, peer = ours.to(device), peer.to(device)
    images, targets = on_device(*detector.make_batch(s.train), device)
    p, o = detector.train_steps(ours, peer, cfg, images, targets)
    t = harness.interleaved(synced(p, device), synced(o, device), warmup=3, repeats=s.repeats)
    return _timing_check("train step throughput", f"{s.train.name}, batch {s.train.batch}", t, s.train.batch)


def on_device(images: torch.Tensor, targets: list[dict], device: torch.device) -> tuple[torch.Tensor, list[dict]]:
    """A benchmark batch (images ``[N, 3, S, S]``, targets with ``boxes [M, 4]`` and ``labels [M]``) on ``device``."""
    return images.to(device), [{k: v.to(device) for k, v in t.items()} for t in targets]


def check_focal(s: Sizes, device: torch.device) -> list[Check]:
    """Focal loss forward + backward against torchvision's, time and values (gradient where torchvision's is
    finite)."""
    r, k = s.focal
    logits, targets = focal.inputs(r, k)
    logits, targets = logits.detach().to(device).requires_grad_(), targets.to(device)
    t = harness.interleaved(synced(lambda: focal.step(focal.peer, logits, targets), device),
                            synced(lambda: focal.step(focal.ours, logits, targets), device),
                            warmup=2, repeats=3 * s.repeats)
    setting = f"{r // 1000}k anchors x {k} classes, fp32"
    rows = [_timing_check("focal loss fwd+bwd time", setting, t)]
    ours_loss = focal.step(focal.ours, logits, targets)
    ours_grad = logits.grad.clone()
    peer_loss = focal.step(focal.peer, logits, targets)
    peer_grad = logits.grad
    finite = torch.isfinite(peer_grad)
    rel = float((ours_loss - peer_loss).abs() / peer_loss.abs())
    diff = float((ours_grad - peer_grad)[finite].abs().max())
    scale = float(peer_grad[finite].abs().max())
    rows.append(Check("focal loss values", setting, "-", "-", f"loss rel. diff {rel:.1e}, grad max abs diff "
                      f"{diff:.1e}", ok=rel < 1e-5 and diff < 1e-5 * max(1.0, scale)))
    return rows


def check_infer(s: Sizes, device: torch.device) -> Check:
    """Batch-1 inference with post-processing, every level yielding its full top-1000 candidates."""
    ours, peer, _ = detector.build_pair(s.infer)
    ours, peer = ours.to(device), peer.to(device)
    detector.dense_scores(ours, peer)
    image, _ = detector.make_batch(s.infer, batch=1)
    p, o = detector.infer_calls(ours, peer, image.to(device))
    t = harness.interleaved(synced(p, device), synced(o, device), warmup=3, repeats=3 * s.repeats)
    return _timing_check("inference incl. post-processing", f"{s.infer.name}, batch 1, dense candidates", t)


def paper_config(toy: bool) -> RunConfig:
    """The paper study's default FL run (``config/paper.yaml``: Table 3's FL row, ResNet-50-FPN at 600 px), or at
    toy size its settings on a ResNet-18 with 32 channels, 1 head conv and 128-px images (torchvision style: the
    MSRA weights exist for ResNet-50 and -101 only)."""
    rows, scale, study = workflow_modules()
    from retinanet.tools.plan import ROOT

    cfg = study.resolve(scale.load_scale({"scale": "paper"}, ROOT / "config"), rows.DEFAULT_FL, seed=0)
    if not toy:
        return cfg
    style = BACKBONE_INPUT["torchvision"]
    model = dataclasses.replace(cfg.model, depth=18, fpn_channels=32, head_convs=1, backbone_style="torchvision")
    data = dataclasses.replace(cfg.data, min_size=128, max_size=213, input_format=style["input_format"],
                               pixel_mean=list(style["pixel_mean"]), pixel_std=list(style["pixel_std"]))
    return dataclasses.replace(cfg, model=model, data=data)


def precisions(device: torch.device) -> dict[str, str | None]:
    """Each precision of :data:`PRECISIONS` -> None where it runs on ``device``, else why it is skipped."""
    out: dict[str, str | None] = dict.fromkeys(PRECISIONS)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        out["bf16"] = "this GPU has no bf16"
    if device.type == "cpu":
        out["fp16"] = "on the CPU, torch's fp16 convolution backward is a slow reference loop; run it on a GPU"
    return out


def check_paper_training(s: Sizes, device: torch.device, precision: str = "fp32") -> tuple[Check, list[float]]:
    """``paper_iterations`` SGD steps of the paper config in ``precision`` on one fixed batch of 2 synthetic
    images; the loss must fall (mean of the last 3 steps below the mean of the first 3). Returns the row and the
    losses."""
    cfg = dataclasses.replace(paper_config(s.toy), precision=precision)
    model, optimizer = probe.build(cfg, device)
    step = probe.train_step(model, optimizer, cfg, device)
    batch = probe.synthetic_batch(cfg, 2, device)
    curve = [float(step(*batch)) for _ in range(s.paper_iterations)]
    first, last = statistics.mean(curve[:3]), statistics.mean(curve[-3:])
    h, w = probe.image_shape(cfg)
    lr = cfg.solver.base_lr * 2 / cfg.solver.reference_batch
    setting = (f"paper default FL run: R-{cfg.model.depth}-FPN, {cfg.model.num_classes} classes, lr {lr:g} "
               f"(paper's per image), 2 images {h}x{w}, {s.paper_iterations} steps on one batch")
    ok = all(math.isfinite(v) for v in curve) and last < first
    return Check(f"paper config, {precision}: training loss falls", setting, "-",
                 f"{curve[0]:.4f} -> {curve[-1]:.4f}", f"mean of first 3 {first:.4f}, of last 3 {last:.4f}",
                 ok=ok), curve


def header(device: torch.device, s: Sizes) -> list[str]:
    """Device, versions, the focal-loss kernel and the mode."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        versions = f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    else:
        name = harness.cpu_model()
        versions = f"torch {torch.__version__} (no CUDA)"
    mode = "toy sizes on the CPU: a check of the script, not a measurement" if s.toy else "full sizes"
    return [f"Device: {name}; {versions}.", f"Focal loss kernel at paper size: {losses.fused_kernel(device)}.",
            f"Mode: {mode}; fp32 (TF32 off), cuDNN autotuning on; peer = torchvision's RetinaNet with our weights."]


def table(checks: list[Check]) -> str:
    """The checks as a Markdown table."""
    lines = ["| check | setting | torchvision | ours | result (ratio: torchvision / ours) | verdict |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {c.check} | {c.setting} | {c.peer} | {c.ours} | {c.result} | {c.verdict} |" for c in checks]
    return "\n".join(lines)


@dataclass
class Report:
    """What :func:`run` measured."""

    header: list[str]
    checks: list[Check]
    paper_losses: dict[str, list[float]]
    """precision -> the training losses of the paper-config check"""

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def text(self) -> str:
        return "\n".join(self.header) + "\n\n" + table(self.checks) + "\n"


def run(toy: bool | None = None, device: torch.device | None = None, log: Callable[[str], None] = print) -> Report:
    """Every check on ``device`` (default: CUDA if available, else the CPU); toy sizes when ``toy`` or without
    CUDA."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    s = TOY if (toy or device.type != "cuda") else FULL
    set_tf32(False)
    set_cudnn_benchmark(True)
    checks: list[Check] = []
    for name, fn in (("train step", lambda: [check_train(s, device)]), ("focal loss", lambda: check_focal(s, device)),
                     ("inference", lambda: [check_infer(s, device)])):
        log(f"gpu_check: {name} ...")
        checks += fn()
    curves = {}
    for precision, skip in precisions(device).items():
        if skip:
            checks.append(Check(f"paper config, {precision}: training loss falls", "-", "-", "-",
                                f"skipped: {skip}"))
            continue
        log(f"gpu_check: paper-config training, {precision} ...")
        paper, curves[precision] = check_paper_training(s, device, precision)
        checks.append(paper)
    return Report(header(device, s), checks, curves)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy", action="store_true", help="toy sizes (automatic without CUDA)")
    parser.add_argument("--device", default=None, help="cuda (default when available), cuda:N or cpu")
    args = parser.parse_args(argv)
    report = run(args.toy, torch.device(args.device) if args.device else None,
                 log=lambda m: print(m, file=sys.stderr, flush=True))
    sys.stdout.write(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
