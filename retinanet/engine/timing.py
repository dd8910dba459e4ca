"""Inference speed (Table 1e, Fig. 2): ``python -m retinanet time --run RUNDIR --out FILE.json``.

What is timed: ``model.predict`` (backbone, heads, decoding, NMS) on one already-resized, normalized image
tensor on the run's device, batch 1, as the paper's "inference time"; image decoding and resizing are not
included. ``warmup`` calls are run first and discarded (cuDNN autotuning, allocator, caches); then ``repeats``
calls cycle over the first ``num_images`` validation images, each bracketed by ``torch.cuda.synchronize`` on a
GPU. The result is the median in milliseconds, with the device name (the paper used an Nvidia M40).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from retinanet import atomic
from retinanet.data.dataset import build_dataset, build_test_loader
from retinanet.engine.evaluate import inference_memory_format, load_run, prepare, run_status
from retinanet.engine.precision import autocast
from retinanet.rundir import provenance

WARMUP = 10
REPEATS = 50
NUM_IMAGES = 10


def measure(fn: Callable[[int], Any], *, warmup: int, repeats: int, synchronize: Callable[[], None],
            clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds of each of ``repeats`` calls ``fn(i)`` after ``warmup`` discarded calls, synchronized around each."""
    for i in range(warmup):
        fn(i)
    synchronize()
    times = []
    for i in range(repeats):
        synchronize()
        start = clock()
        fn(i)
        synchronize()
        times.append(clock() - start)
    return times


def time_run(run_dir: str | Path, out: str | Path, *, warmup: int = WARMUP, repeats: int = REPEATS,
             num_images: int = NUM_IMAGES, device_name: str | None = None) -> dict[str, Any]:
    """Time a run's model at batch 1; write and return the record (see module docstring)."""
    run_dir = Path(run_dir)
    status = run_status(run_dir).get("status")
    if status != "completed":
        record: dict[str, Any] = {"status": status, "ms_per_image_median": None, "run": str(run_dir)}
        atomic.write_json(out, record)
        return record
    cfg, model, device = load_run(run_dir, device_name)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dataset = build_dataset(cfg.data, train=False)
    inputs = []
    for images, _, sizes in build_test_loader(cfg, dataset, batch_size=1):
        inputs.append((prepare(images, cfg, device), sizes))
        if len(inputs) == num_images:
            break

    def call(i: int) -> None:
        images, sizes = inputs[i % len(inputs)]
        with torch.no_grad(), autocast(device, cfg.precision):
            model.predict(images, sizes)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = measure(call, warmup=warmup, repeats=repeats, synchronize=sync)
    ms = [t * 1000.0 for t in times]
    channels_last = inference_memory_format(cfg, device) == torch.channels_last
    record = {"status": status, "ms_per_image_median": statistics.median(ms), "ms_per_image": ms,
              "warmup": warmup, "repeats": repeats, "num_images": len(inputs), "batch_size": 1,
              "min_size": cfg.data.min_size, "max_size": cfg.data.max_size, "precision": cfg.precision,
              "channels_last": channels_last, "device": provenance.device_info(device),
              "packages": provenance.package_versions(), "run": str(run_dir)}
    atomic.write_json(out, record)
    return record


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("time", help="inference ms per image at batch 1 (Table 1e)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory written by `train`")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--warmup", type=int, default=WARMUP, help="discarded calls before timing")
    p.add_argument("--repeats", type=int, default=REPEATS, help="timed calls (the median is reported)")
    p.add_argument("--num-images", type=int, default=NUM_IMAGES, help="validation images cycled over")
    p.add_argument("--device", default=None, help="override the run's device (auto, cpu, cuda)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.warmup < 0 or args.num_images < 1:
        raise ValueError("time: --repeats and --num-images must be >= 1 and --warmup >= 0")
    record = time_run(args.run, args.out, warmup=args.warmup, repeats=args.repeats, num_images=args.num_images,
                      device_name=args.device)
    print(f"time: {record['ms_per_image_median']} ms/image (median) on {record.get('device', {}).get('name')}",
          file=sys.stderr)
    return 0
