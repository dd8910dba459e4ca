"""Fake Detectron MSRA ImageNet ResNets (``R-50.pkl``, ``R-101.pkl``): every blob name and shape of the published
files, random values. Used by tests/test_caffe2_weights.py and by the paper rehearsal (tests/test_rehearsal.py).

Built from Detectron's ResNet layout (``ResNet.py``: stem, then res2..res5 of 3, 4, 6, 3 bottlenecks for ResNet-50
and 3, 4, 23, 3 for ResNet-101, widths 64/256 .. 512/2048), independently of the converter's name table
(:func:`retinanet.tools.caffe2_weights.name_map`).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
WIDTHS = ((64, 256), (128, 512), (256, 1024), (512, 2048))  # (bottleneck, output) of res2..res5


def stages(depth: int) -> list[tuple[int, int, int, int]]:
    """(res<i>, blocks, bottleneck width, output width) of res2..res5."""
    return [(i + 2, n, mid, out) for i, (n, (mid, out)) in enumerate(zip(BLOCKS[depth], WIDTHS, strict=True))]


def msra_blobs(depth: int = 50, seed: int = 0, *, stable: bool = False) -> dict[str, np.ndarray]:
    """Every blob of Detectron's R-<depth>.pkl with its shape, random values (He-scaled convs, affine near 1 / 0),
    plus the blobs the conversion drops (classifier, conv1_b).

    ``stable``: values a detector can fine-tune from, as it can from the real ImageNet weights: the stem's filters
    divided by 64 (Detectron's input is BGR 0-255 minus the mean, std ~60) and each residual branch's last affine
    scale in 0.1-0.3, so that activations stay of order 1 through 33 bottlenecks instead of growing to ~1e5 (where
    a rehearsal's first steps diverge). Same names and shapes either way."""
    rng = np.random.default_rng(seed)

    def conv(out: int, inp: int, k: int) -> np.ndarray:
        return (rng.standard_normal((out, inp, k, k)) * np.sqrt(2.0 / (inp * k * k))).astype(np.float32)

    def affine(name: str, c: int) -> None:
        blobs[f"{name}_bn_s"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        blobs[f"{name}_bn_b"] = (0.1 * rng.standard_normal(c)).astype(np.float32)

    blobs = {"conv1_w": conv(64, 3, 7) / np.float32(64.0 if stable else 1.0)}
    affine("res_conv1", 64)
    inp = 64
    for stage, n, mid, out in stages(depth):
        for j in range(n):
            p = f"res{stage}_{j}"
            if j == 0:
                blobs[f"{p}_branch1_w"] = conv(out, inp, 1)
                affine(f"{p}_branch1", out)
            for branch, shape in (("2a", (mid, inp, 1)), ("2b", (mid, mid, 3)), ("2c", (out, mid, 1))):
                blobs[f"{p}_branch{branch}_w"] = conv(*shape)
                affine(f"{p}_branch{branch}", shape[0])
            if stable:
                blobs[f"{p}_branch2c_bn_s"] *= np.float32(0.2)
            inp = out
    blobs.update(conv1_b=np.full(64, 1e-9, np.float32), fc1000_w=np.zeros((1000, 2048), np.float32),
                 fc1000_b=np.zeros(1000, np.float32))
    return blobs


def write_msra_pickle(path: str | Path, depth: int = 50, seed: int = 0, *, stable: bool = False) -> Path:
    """Write a fake ``R-<depth>.pkl`` as the published file is pickled (protocol 2, blobs under ``blobs``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"blobs": msra_blobs(depth, seed, stable=stable)}, protocol=2))
    return path
