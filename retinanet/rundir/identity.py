"""A run's identity: what its trained weights depend on, as opposed to where and how it executes.

A :class:`retinanet.config.RunConfig` mixes two kinds of fields:

- *operational* (:data:`OPERATIONAL_FIELDS`): where the data and the start weights live, data-loader workers, how
  often to checkpoint and log, the device, the CPU threads and cuDNN's autotuning (``cudnn_benchmark``: it picks
  among algorithms that compute the same convolution). They change the job, never the trained model (the
  data order and augmentation are a function of the seed and the stream position, not of the workers; a resumed
  run ends bitwise equal whatever its checkpoint period).
- *scientific*: every other field, including any field added to RunConfig later (a new field retrains by default).

A run's identity (:func:`identity`) is its scientific config plus the content of the files that an operational
path points to but that decide the training: the start weights (``model.pretrained``, when it names a file) and
the training annotations. So a dataset moved to another root, or weights cached elsewhere, keep the identity; a
regenerated annotation file or a re-pretrained backbone with other content changes it. Images are not hashed
(COCO's are 18 GB); the annotation file lists them.

``train --resume auto`` reuses a finished run whose identity equals the new one and retrains (naming the changed
fields, :func:`differences`) when it differs.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from retinanet.config import RunConfig, to_dict

OPERATIONAL_FIELDS = (
    "threads", "device", "data.root", "data.train_images", "data.train_annotations", "data.val_images",
    "data.val_annotations", "data.num_workers", "model.pretrained", "solver.checkpoint_period", "solver.log_period",
    "cudnn_benchmark",
)
"""Dotted RunConfig fields that say where and how a run executes, not what it trains. ``model.pretrained`` is a
path here; its content (or its keyword, ``imagenet``/``none``) is part of the identity's ``inputs``."""

NOT_A_FILE = ("none", "imagenet")
"""``model.pretrained`` values that are keywords, not paths."""


def without(config: dict, fields: tuple[str, ...]) -> dict:
    """A copy of a nested config mapping without the dotted ``fields`` (absent ones are ignored)."""
    out = copy.deepcopy(config)
    for path in fields:
        *parents, name = path.split(".")
        node = out
        for key in parents:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(name, None)
    return out


def scientific(config: dict) -> dict:
    """A copy of a resolved config mapping (:func:`retinanet.config.to_dict`) without the operational fields."""
    return without(config, OPERATIONAL_FIELDS)


def value(config: dict, path: str) -> Any:
    """The value of dotted field ``path`` in a nested config mapping."""
    node: Any = config
    for key in path.split("."):
        node = node[key]
    return node


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes, or ``missing:<path>`` when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return f"missing:{path}"
    return f"sha256:{sha256_file(path)}"


def sha256_file(path: str | Path) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _in_root(root: str, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else Path(root) / p


def inputs(cfg: RunConfig) -> dict[str, str]:
    """Content digests of the files behind operational paths that decide the training."""
    pretrained = cfg.model.pretrained
    return {"model.pretrained": pretrained if pretrained in NOT_A_FILE else file_digest(pretrained),
            "data.train_annotations": file_digest(_in_root(cfg.data.root, cfg.data.train_annotations))}


def identity(cfg: RunConfig) -> dict[str, Any]:
    """``{"config": scientific config, "inputs": file digests}``: what a finished run is reused for."""
    return {"config": scientific(to_dict(cfg)), "inputs": inputs(cfg)}


def fingerprint(ident: dict) -> str:
    """A short stable hash of an identity (or of any JSON-able mapping), for logs and records."""
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def differences(old: dict, new: dict) -> list[str]:
    """The fields in which two identities differ, readable: ``loss.alpha: 0.25 -> 0.75``, ``content of
    model.pretrained: sha256:1a2b3c4d5e6f -> sha256:...``. Empty when they are equal. Missing ``inputs`` on
    either side (a record written before inputs were recorded) are not compared."""
    lines = []
    a, b = _flatten(old.get("config", {})), _flatten(new.get("config", {}))
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            lines.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    if old.get("inputs") is not None and new.get("inputs") is not None:
        for key in sorted(set(old["inputs"]) | set(new["inputs"])):
            x, y = old["inputs"].get(key), new["inputs"].get(key)
            if x != y:
                lines.append(f"content of {key}: {_short(x)} -> {_short(y)}")
    return lines


def _short(digest: Any) -> str:
    text = str(digest)
    return text[:len("sha256:") + 12] if text.startswith("sha256:") else text
