"""Loss samples of a converged model for Fig. 4: ``python -m retinanet loss-samples --run RUNDIR --out FILE.npz``.

Fig. 4 plots the cumulative distribution of the (normalized) focal loss of a trained model's positive and
negative samples for several gamma. A *sample* is one (anchor, class) pair of the sigmoid classifier with its
binary target: *positive* where the anchor is foreground and the class is its ground-truth class, *negative*
for every other class of a non-ignored anchor (background anchors: all K classes; foreground anchors: the K - 1
other classes). Ignored anchors (IoU in [bg_iou, fg_iou)) are left out, as in the loss.

The first ``num_images`` validation images are run through ``model.anchor_outputs`` (no flip, ``data.min_size``).
All positives are kept. Negatives are far more numerous (about R x K per image), so each image contributes a
uniform random subsample of at most ``max_negatives // num_images`` of its negative samples, drawn without
replacement by ``numpy.random.default_rng(seed)`` (seeded once, images in order).

The ``.npz`` holds ``pos_logits`` float32 [P], ``neg_logits`` float32 [Q], ``pos_classes`` int64 [P] and the
scalars ``num_images``, ``num_pos``, ``num_neg_total`` (before subsampling), ``num_neg_kept``, ``max_negatives``
and ``seed``. Probabilities are ``sigmoid(logits)``; any loss of ``retinanet.modeling.losses`` can be applied to them.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retinanet import atomic
from retinanet.data.dataset import build_dataset, build_test_loader
from retinanet.engine.evaluate import load_run, prepare, run_status
from retinanet.modeling.matching import IGNORE

NUM_IMAGES = 100
MAX_NEGATIVES = 1_000_000
SEED = 0


def split_samples(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's ``logits [R, K]`` and anchor ``labels [R]`` (>= 0 class, -1 background, -2 ignored) ->
    positive logits [P], their classes [P], negative logits [Q] (every other non-ignored (anchor, class))."""
    fg = labels >= 0
    keep = labels != IGNORE
    targets = torch.zeros_like(logits, dtype=torch.bool)
    targets[fg, labels[fg]] = True
    negatives = keep[:, None] & ~targets
    return logits[targets], labels[fg], logits[negatives]


def collect(run_dir: str | Path, out: str | Path, *, num_images: int = NUM_IMAGES, max_negatives: int = MAX_NEGATIVES,
            seed: int = SEED, device_name: str | None = None) -> dict[str, Any]:
    """Write the samples of the module docstring to ``out``; return the counts."""
    status = run_status(run_dir).get("status")
    if status != "completed":
        raise ValueError(f"{Path(run_dir) / 'result.json'}: status is {status!r}; Fig. 4 needs a converged model")
    cfg, model, device = load_run(run_dir, device_name)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dataset = build_dataset(cfg.data, train=False)
    n = min(num_images, len(dataset))
    per_image = max_negatives // n
    rng = np.random.default_rng(seed)
    pos, pos_cls, neg = [], [], []
    num_neg_total, seen = 0, 0
    with torch.no_grad():
        for images, targets, _ in build_test_loader(cfg, dataset, batch_size=1):
            if seen == n:
                break
            targets_dev = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
            out_dict = model.anchor_outputs(prepare(images, cfg, device), targets_dev)
            p, c, q = split_samples(out_dict["logits"][0].float().cpu(), out_dict["labels"][0].cpu())
            num_neg_total += len(q)
            if len(q) > per_image:
                q = q[torch.from_numpy(np.sort(rng.choice(len(q), size=per_image, replace=False)))]
            pos.append(p.numpy())
            pos_cls.append(c.numpy())
            neg.append(q.numpy())
            seen += 1
    counts = {"num_images": seen, "num_pos": int(sum(len(p) for p in pos)), "num_neg_total": num_neg_total,
              "num_neg_kept": int(sum(len(q) for q in neg)), "max_negatives": max_negatives, "seed": seed}
    arrays = {"pos_logits": np.concatenate(pos).astype(np.float32), "pos_classes": np.concatenate(pos_cls),
              "neg_logits": np.concatenate(neg).astype(np.float32), **{k: np.asarray(v) for k, v in counts.items()}}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic.write_with(out, lambda f: f.write(buffer.getvalue()))
    return counts


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("loss-samples", help="logits of positive/negative samples for Fig. 4",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory written by `train`")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("--num-images", type=int, default=NUM_IMAGES, help="validation images used")
    p.add_argument("--max-negatives", type=int, default=MAX_NEGATIVES, help="cap on negative samples kept")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the negative subsample")
    p.add_argument("--device", default=None, help="override the run's device (auto, cpu, cuda)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.num_images < 1 or args.max_negatives < 1:
        raise ValueError("loss-samples: --num-images and --max-negatives must be >= 1")
    counts = collect(args.run, args.out, num_images=args.num_images, max_negatives=args.max_negatives,
                     seed=args.seed, device_name=args.device)
    print(f"loss-samples: {counts}", file=sys.stderr)
    return 0
