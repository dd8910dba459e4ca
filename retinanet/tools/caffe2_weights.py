"""Detectron's ImageNet ResNets, the MSRA weights the paper fine-tuned (section 4.1, 'Initialization'), as this
project's ResNet: read ``R-50.pkl`` / ``R-101.pkl`` and write a state_dict for ``model.backbone_style: caffe2``.

    python -m retinanet convert-weights --from R-50.pkl --out work/weights/resnet50-msra.pth

The published files (``https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-50.pkl``, ``R-101.pkl``;
detectron2's ``ImageNetPretrained/MSRA`` copies use the same names) are Python pickles of a dict name -> numpy
array, the blobs themselves (ImageNet models) or under ``blobs`` (detection models). Caffe2 names map to
torchvision's ResNet names (:func:`name_map`)::

    conv1_w                                 conv1.weight
    res_conv1_bn_{s,b}                      bn1.{weight,bias}
    res{i}_{j}_branch2{a,b,c}_w             layer{i-1}.{j}.conv{1,2,3}.weight
    res{i}_{j}_branch2{a,b,c}_bn_{s,b}      layer{i-1}.{j}.bn{1,2,3}.{weight,bias}
    res{i}_0_branch1_w                      layer{i-1}.0.downsample.0.weight
    res{i}_0_branch1_bn_{s,b}               layer{i-1}.0.downsample.1.{weight,bias}

Detectron ran the frozen BN of these ResNets as an AffineChannel op, ``y = x * s + b``: the files hold only the
scale ``_bn_s`` and bias ``_bn_b``. Each becomes a BatchNorm with running mean 0 and running variance ``1 - eps``,
so that ``weight / sqrt(var + eps)`` is ``s`` (detectron2's FrozenBatchNorm2d does the same).

Dropped, as Detectron's RetinaNet never used them: the classifier (``fc1000_{w,b}``, or ``pred_{w,b}``), the
stem's ``conv1_b`` (Detectron's conv1 has no bias; the file's values are ~1e-9), solver state (``*_momentum``) and
``weight_order``. Any other blob, a missing one or a wrong shape is refused, naming them.

The pickle is read with only numpy's array reconstruction allowed: no code from the file runs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor
from torchvision.ops.misc import FrozenBatchNorm2d

from retinanet import atomic
from retinanet.config import BACKBONE_INPUT
from retinanet.modeling.backbone import STYLE_KEY
from retinanet.rundir.identity import sha256_file

#: Bottleneck blocks of res2..res5 per depth (Detectron's ``ResNet.py``; MSRA published R-50 and R-101).
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
#: Where Detectron published each file.
URL = "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-{depth}.pkl"
#: Blobs the conversion drops (see the module docstring); ``*_momentum`` too.
DROPPED = frozenset({"conv1_b", "fc1000_w", "fc1000_b", "pred_w", "pred_b", "weight_order"})
#: The eps of torchvision's BatchNorm layers, which the converted running variance ``1 - eps`` cancels.
BN_EPS = FrozenBatchNorm2d(1).eps

_BRANCHES = {"branch2a": ("conv1", "bn1"), "branch2b": ("conv2", "bn2"), "branch2c": ("conv3", "bn3"),
             "branch1": ("downsample.0", "downsample.1")}


class Caffe2WeightsError(ValueError):
    """A Caffe2 weights file cannot be read or does not hold an MSRA ResNet-50/101 (one line naming the file)."""


def name_map(depth: int) -> dict[str, str]:
    """Caffe2 blob name -> torchvision ResNet parameter name, for every blob a ResNet-``depth`` needs."""
    names = {"conv1_w": "conv1.weight", "res_conv1_bn_s": "bn1.weight", "res_conv1_bn_b": "bn1.bias"}
    for stage, blocks in enumerate(BLOCKS[depth], start=2):
        for j in range(blocks):
            for branch, (conv, bn) in _BRANCHES.items():
                if branch == "branch1" and j > 0:
                    continue  # only the first block of a stage has a projection shortcut
                c2, tv = f"res{stage}_{j}_{branch}", f"layer{stage - 1}.{j}"
                names[f"{c2}_w"] = f"{tv}.{conv}.weight"
                names[f"{c2}_bn_s"] = f"{tv}.{bn}.weight"
                names[f"{c2}_bn_b"] = f"{tv}.{bn}.bias"
    return names


class _ArraysOnly(pickle.Unpickler):
    """Unpickles containers, strings, numbers and numpy arrays; any other global is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name} (only numpy arrays are read)")
        if module.startswith("numpy.core") and importlib.util.find_spec("numpy._core") is not None:
            module = "numpy._core" + module[len("numpy.core"):]  # NumPy 2 renamed numpy.core (files predate it)
        return getattr(importlib.import_module(module), name)


def read_blobs(path: str | Path) -> dict[str, np.ndarray]:
    """The blobs of a Detectron / detectron2 Caffe2 pickle (``blobs`` unwrapped if present), numpy arrays only.

    Raises:
        Caffe2WeightsError: naming the file if it is missing, not such a pickle, or holds a non-array blob.
    """
    path = Path(path)
    if not path.is_file():
        raise Caffe2WeightsError(f"{path}: weights file does not exist")
    try:
        with open(path, "rb") as f:
            data = _ArraysOnly(f, encoding="latin1").load()  # latin1: the files were pickled by Python 2
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise Caffe2WeightsError(f"{path}: cannot read Caffe2 weights: {type(exc).__name__}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("blobs"), dict):
        data = data["blobs"]
    if not isinstance(data, dict):
        raise Caffe2WeightsError(f"{path}: expected a dict of blobs, got {type(data).__name__}")
    bad = sorted(str(k) for k, v in data.items() if k != "weight_order" and not isinstance(v, np.ndarray))
    if bad:
        raise Caffe2WeightsError(f"{path}: blobs that are not arrays: {', '.join(bad[:5])}")
    return data


def infer_depth(blobs: dict[str, np.ndarray], source: str = "weights") -> int:
    """ResNet depth from the number of res4 blocks (6: 50, 23: 101)."""
    res4 = {k.split("_")[1] for k in blobs if k.startswith("res4_") and k.endswith("_branch2a_w")}
    for depth, blocks in BLOCKS.items():
        if len(res4) == blocks[2]:
            return depth
    raise Caffe2WeightsError(f"{source}: {len(res4)} res4 blocks; an MSRA ResNet-50 has 6, ResNet-101 23")


def convert(blobs: dict[str, np.ndarray], depth: int | None = None, source: str = "weights") -> dict[str, Tensor]:
    """torchvision ResNet-``depth`` state_dict (no ``fc``) from Caffe2 blobs; ``depth`` None: from the blobs.

    Every tensor is float32; each BatchNorm gets ``running_mean`` 0 and ``running_var`` ``1 - eps``.

    Raises:
        Caffe2WeightsError: naming ``source`` and the blobs that are missing, unexpected or of the wrong shape.
    """
    depth = infer_depth(blobs, source) if depth is None else depth
    if depth not in BLOCKS:
        raise Caffe2WeightsError(f"{source}: depth {depth}: MSRA published ResNet-50 and ResNet-101 only")
    names = name_map(depth)
    kept = {k: v for k, v in blobs.items() if k not in DROPPED and not k.endswith("_momentum")}
    missing, unexpected = sorted(set(names) - set(kept)), sorted(set(kept) - set(names))
    if missing or unexpected:
        raise Caffe2WeightsError(f"{source}: not an MSRA ResNet-{depth}: {len(missing)} blobs missing "
                                 f"{missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}")
    with torch.device("meta"):  # shapes only, no memory
        reference = torchvision.models.get_model(f"resnet{depth}", weights=None).state_dict()
    state: dict[str, Tensor] = {}
    for c2, tv in names.items():
        want = tuple(reference[tv].shape)
        if tuple(kept[c2].shape) != want:
            raise Caffe2WeightsError(f"{source}: blob {c2} has shape {tuple(kept[c2].shape)}, ResNet-{depth}'s "
                                     f"{tv} is {want}")
        state[tv] = torch.from_numpy(np.array(kept[c2], dtype=np.float32))
        if tv.endswith(".bias"):  # a BN: Detectron's AffineChannel is BN with mean 0 and var + eps = 1
            bn = tv[: -len(".bias")]
            state[f"{bn}.running_mean"] = torch.zeros(want)
            state[f"{bn}.running_var"] = torch.full(want, 1.0 - BN_EPS)
    return state


def convert_file(src: str | Path, out: str | Path, depth: int | None = None) -> dict[str, Any]:
    """Convert the Caffe2 pickle ``src`` and write ``out`` atomically: ``{"model": state_dict, "backbone_style":
    "caffe2", "source": name, "sha256": of src}`` (the style is checked when a backbone loads it). Returns that
    record without the state_dict, plus ``depth`` and ``tensors``."""
    blobs = read_blobs(src)
    depth = infer_depth(blobs, str(src)) if depth is None else depth
    state = convert(blobs, depth, source=str(src))
    record = {STYLE_KEY: "caffe2", "source": Path(src).name, "sha256": sha256_file(src)}
    atomic.write_with(out, lambda f: torch.save({"model": state, **record}, f))
    return {**record, "depth": depth, "tensors": len(state)}


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("convert-weights", help="Detectron's MSRA R-50.pkl / R-101.pkl -> a state_dict for "
                              "model.backbone_style caffe2",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="src", required=True, help="Caffe2 pickle, e.g. R-50.pkl (" + URL + ")")
    p.add_argument("--out", required=True, help="state_dict file to write (.pth)")
    p.add_argument("--depth", type=int, choices=sorted(BLOCKS), help="expected depth (default: from the blobs)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    info = convert_file(args.src, args.out, args.depth)
    print(f"{args.out}: ResNet-{info['depth']} from {args.src} (sha256 {info['sha256']}), {info['tensors']} tensors")
    print(f"use it with: model.pretrained: {args.out}, model.backbone_style: caffe2, data: {BACKBONE_INPUT['caffe2']}")
    return 0
