"""COCO evaluation: ``python -m retinanet evaluate --run RUNDIR --out DIR``.

Inference over the validation split (``data.val_*``, shorter side ``data.min_size``, no flip) -> detections in
the *original* image pixels (boxes divided by the resize scale and clipped) with the JSON's category ids ->
``DIR/detections.json`` (COCO results format: ``image_id, category_id, bbox [x, y, w, h], score``) ->
pycocotools ``COCOeval(iouType="bbox")`` -> ``DIR/metrics.json``::

    {"AP", "AP50", "AP75", "APs", "APm", "APl"  (percent, 0-100, or null), "status": "completed" | "diverged",
     "num_images", "num_detections", "run"}

What a value means, the same with or without detections:

- a number: ground truth of that column exists and this is the measured AP; a completed run without a single
  detection on a split with ground truth gets a real, measured 0.0;
- null: the split has no ground truth for that column (no non-crowd box at all, or none of that size for
  APs/APm/APl), so AP is not defined (COCOeval's -1); with or without detections. ``analysis`` shows a null
  size column as ``-`` (no value, left out of means) and refuses a null ``AP``, naming the metrics file.

A diverged run (``result.json``) gives AP 0 for every column (the study's contract: a diverged run scores 0),
status ``diverged`` and an empty detections file.
``--iteration N`` evaluates the weights the run kept after iteration N (``solver.snapshot_period``,
:mod:`retinanet.rundir.snapshots`) instead of the final ones: one point of an AP-against-iteration curve.
``--test-dev IMAGES ANNOTATIONS`` instead exports the detections for an unlabeled split (COCO test-dev
``image_info`` JSON) in the evaluation server's format and file naming, ``DIR/detections_<split>_<alg>_results.json``
(e.g. ``detections_test-dev2017_r101-800-fl-g2-a0.25-jit-1.5x-s0_results.json``; ``--alg``, default the run
folder's name), without metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retinanet import atomic
from retinanet.config import ConfigError, RunConfig, load
from retinanet.data.dataset import CocoDetection, build_dataset, build_test_loader, check_num_classes
from retinanet.engine import checkpoint
from retinanet.engine.distributed import resolve_device
from retinanet.engine.precision import autocast, set_tf32
from retinanet.modeling.detector import RetinaNet, build_model
from retinanet.rundir.snapshots import snapshot_iterations, snapshot_path

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
"""The paper's columns, in the order of ``COCOeval.stats[:6]``."""


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """``result.json`` of a run; a CheckpointError-style ValueError if the run has not finished."""
    path = Path(run_dir) / "result.json"
    if not path.is_file():
        raise ValueError(f"{path}: missing; the run has not finished (train it first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc.msg})") from None


def load_run(run_dir: str | Path, device_name: str | None = None,
             weights: str | Path | None = None) -> tuple[RunConfig, RetinaNet, torch.device]:
    """The run's config, its trained model (``model_final.pt``, or the file ``weights``, e.g. a snapshot; loaded
    weights-only) in eval mode on the device (``device_name``, default the run's ``device``) in the inference layout,
    and that device. Sets the run's TF32 switches (``allow_tf32``) for evaluate, time and loss samples, which all
    load the run here."""
    run_dir = Path(run_dir)
    weights = Path(weights) if weights is not None else run_dir / "model_final.pt"
    cfg = load(run_dir / "config.resolved.yaml")
    # The weights come from the run: do not fetch or read pretrained backbone weights again.
    model = build_model(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained="none")))
    payload = checkpoint.load(weights)
    checkpoint.require(payload, weights, ("model",))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise checkpoint.CheckpointError(f"{weights}: weights do not fit the run's config "
                                         f"({str(exc).splitlines()[0]})") from None
    device = resolve_device(device_name or cfg.device)
    set_tf32(cfg.allow_tf32)
    model.eval().to(device)
    model.to(memory_format=inference_memory_format(cfg, device))
    return cfg, model, device


def inference_memory_format(cfg: RunConfig, device: torch.device) -> torch.memory_format:
    """The layout inference runs in on ``device`` (``test.memory_format``; ``auto``: channels-last on CPU, where
    oneDNN's channels-last convolutions run batch-1 inference ~1.1x faster than NCHW, and for a run trained in
    channels-last; NCHW otherwise)."""
    choice = cfg.test.memory_format
    if choice == "auto":
        choice = "channels_last" if device.type == "cpu" or cfg.channels_last else "contiguous"
    return torch.channels_last if choice == "channels_last" else torch.contiguous_format


def prepare(images: torch.Tensor, cfg: RunConfig, device: torch.device) -> torch.Tensor:
    """Move a padded batch ``[N, 3, H, W]`` to ``device`` in the inference layout (:func:`inference_memory_format`)."""
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=inference_memory_format(cfg, device))


@torch.no_grad()
def detect(model: RetinaNet, dataset: CocoDetection, cfg: RunConfig, device: torch.device) -> list[dict[str, Any]]:
    """COCO-format detections of ``model`` over every image of ``dataset``, in original pixels and category ids."""
    loader = build_test_loader(cfg, dataset)
    results: list[dict[str, Any]] = []
    for images, targets, sizes in loader:
        with autocast(device, cfg.precision):  # as the run trained: bf16 or fp16 autocast, or none
            outputs = model.predict(prepare(images, cfg, device), sizes)
        for out, target in zip(outputs, targets, strict=True):
            results += to_coco(out, target, dataset.category_ids)
    return results


def to_coco(output: dict[str, torch.Tensor], target: dict[str, Any], category_ids: list[int]) -> list[dict]:
    """One image's detections (``boxes [D,4]`` xyxy resized pixels, ``scores [D]``, ``labels [D]``) -> COCO
    results: boxes divided by ``target['scale']``, clipped to ``orig_size``, as ``[x, y, w, h]``."""
    height, width = target["orig_size"]
    boxes = output["boxes"].float().cpu() / target["scale"]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
    return [{"image_id": int(target["image_id"]), "category_id": int(category_ids[int(label)]),
             "bbox": [round(float(v), 3) for v in box], "score": round(float(score), 5)}
            for box, score, label in zip(xywh, output["scores"].float().cpu(), output["labels"].cpu(), strict=True)]


def area_ranges(gt: COCO) -> list[list[float]] | None:
    """COCOeval ``areaRng`` (all, small, medium, large) for a dataset whose ``info.area_thresholds`` gives its own
    small/medium and medium/large limits (the embedded dataset scales COCO's 32^2 / 96^2 to its image size);
    None (pycocotools' COCO limits) otherwise, also when ``info`` is not an object (``load_coco_json`` checked
    the limits)."""
    info = gt.dataset.get("info")
    limits = info.get("area_thresholds") if isinstance(info, dict) else None
    if limits is None:
        return None
    small, medium = (float(v) for v in limits)
    return [[0.0, 1e10], [0.0, small], [small, medium], [medium, 1e10]]


def _results(gt: COCO, detections: list[dict[str, Any]]) -> COCO:
    """``gt.loadRes(detections)``, also for an empty list (which pycocotools' ``loadRes`` cannot load)."""
    if detections:
        return gt.loadRes(detections)
    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                  "annotations": []}
    dt.createIndex()
    return dt


def coco_metrics(gt: COCO, detections: list[dict[str, Any]]) -> dict[str, float | None]:
    """COCOeval bbox over every ground-truth image; the six paper columns in percent (None for -1).

    No detections is evaluated like any other result: 0.0 where there is ground truth, None where there is none
    (module docstring). APs/APm/APl use the dataset's own area limits where its ``info`` states them
    (:func:`area_ranges`).
    """
    with contextlib.redirect_stdout(io.StringIO()) as text:
        dt = _results(gt, detections)
        ev = COCOeval(gt, dt, iouType="bbox")
        ranges = area_ranges(gt)
        if ranges is not None:
            ev.params.areaRng = ranges
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    print("\n".join(line for line in text.getvalue().splitlines() if "Average" in line), file=sys.stderr)
    return {name: (None if ev.stats[i] < 0 else float(ev.stats[i]) * 100.0) for i, name in enumerate(METRICS)}


def evaluate_run(run_dir: str | Path, out_dir: str | Path, *, device_name: str | None = None,
                 iteration: int | None = None) -> dict[str, Any]:
    """Evaluate a run on its validation split; write ``detections.json`` then ``metrics.json``; return metrics.

    ``iteration``: the weights the run had after that iteration, a snapshot (:mod:`retinanet.rundir.snapshots`; the last
    iteration is ``model_final.pt``), for AP-against-iteration curves; a run that diverged at or before it scores 0,
    like a diverged run's final weights. The metrics then hold ``iteration`` too."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    status = run_status(run_dir)
    cfg = load(run_dir / "config.resolved.yaml")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dataset = build_dataset(cfg.data, train=False)
    check_num_classes(dataset, cfg.model.num_classes)
    weights, state = None, status.get("status")
    if iteration is not None:
        if iteration != cfg.solver.iterations and iteration not in snapshot_iterations(cfg.solver):
            raise ConfigError(f"evaluate --iteration {iteration}: {run_dir} keeps no weights of that iteration "
                              f"(snapshots: {snapshot_iterations(cfg.solver)}, final: {cfg.solver.iterations})")
        if state == "diverged" and status.get("iteration", 0) > iteration:
            state = "completed"  # it diverged later: the snapshot is a trained model
        if iteration != cfg.solver.iterations:
            weights = snapshot_path(run_dir, iteration)
    if state == "diverged":
        detections: list[dict] = []
        metrics: dict[str, Any] = dict.fromkeys(METRICS, 0.0)
    else:
        cfg, model, device = load_run(run_dir, device_name, weights)
        detections = detect(model, dataset, cfg, device)
        metrics = coco_metrics(dataset.coco, detections)
    metrics.update(status=state, num_images=len(dataset), num_detections=len(detections), run=str(run_dir))
    if iteration is not None:
        metrics["iteration"] = iteration
    atomic.write_json(out_dir / "detections.json", detections)
    atomic.write_json(out_dir / "metrics.json", metrics)
    return metrics


def server_file_name(split: str, alg: str) -> str:
    """The COCO evaluation server's name for a detection results file: ``detections_<split>_<alg>_results.json``
    (``[type]_[testset]_[alg]_results.json``; ``split`` e.g. ``test-dev2017``). Underscores separate the fields, so
    ``alg`` may hold only letters, digits, ``-`` and ``.``."""
    if not re.fullmatch(r"[A-Za-z0-9.-]+", alg):
        raise ValueError(f"--alg: {alg!r} must be letters, digits, '-' or '.' (the server's file name "
                         f"detections_{split}_<alg>_results.json splits on '_')")
    return f"detections_{split}_{alg}_results.json"


def export_test_dev(run_dir: str | Path, out_dir: str | Path, images: str | Path, annotations: str | Path, *,
                    alg: str | None = None, device_name: str | None = None) -> Path:
    """Detections for an unlabeled split (COCO ``image_info`` JSON) in ``out_dir``, named as the evaluation server
    expects (:func:`server_file_name`); ``alg`` defaults to the run folder's name with other characters as ``-``."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    split = Path(annotations).stem.replace("image_info_", "")
    name = server_file_name(split, alg if alg is not None else re.sub(r"[^A-Za-z0-9.-]+", "-", run_dir.resolve().name))
    if run_status(run_dir).get("status") != "completed":
        raise ValueError(f"{run_dir / 'result.json'}: status is not 'completed'; nothing to export")
    cfg, model, device = load_run(run_dir, device_name)
    dataset = CocoDetection(images, annotations, min_sizes=[cfg.data.min_size], max_size=cfg.data.max_size,
                            hflip=False, pixel_mean=cfg.data.pixel_mean, pixel_std=cfg.data.pixel_std, train=False,
                            require_annotations=False, input_format=cfg.data.input_format,
                            resize_antialias=cfg.data.resize_antialias)
    path = out_dir / name
    atomic.write_json(path, detect(model, dataset, cfg, device))
    return path


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="COCO evaluation of a trained run", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory written by `train`")
    p.add_argument("--out", required=True, help="output directory for detections.json and metrics.json")
    p.add_argument("--device", default=None, help="override the run's device (auto, cpu, cuda)")
    p.add_argument("--iteration", type=int, default=None,
                   help="evaluate the weights after this iteration (a snapshot, solver.snapshot_period)")
    p.add_argument("--test-dev", nargs=2, metavar=("IMAGES", "ANNOTATIONS"), default=None,
                   help="export detections for an unlabeled split (e.g. test2017 image_info_test-dev2017.json)")
    p.add_argument("--alg", default=None, help="with --test-dev: the algorithm name in the server's file name "
                   "detections_<split>_<alg>_results.json (default: the run folder's name)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.test_dev:
        path = export_test_dev(args.run, args.out, *args.test_dev, alg=args.alg, device_name=args.device)
        print(f"evaluate: wrote {path}", file=sys.stderr)
        return 0
    metrics = evaluate_run(args.run, args.out, device_name=args.device, iteration=args.iteration)
    print(json.dumps(metrics), file=sys.stderr)
    return 0
