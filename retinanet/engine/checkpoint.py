"""Checkpoints: atomic writes, safe loads, integrity digest, RNG state.

Files are ``torch.save`` dicts loaded with ``torch.load(..., weights_only=True)``: only tensors and plain
containers/scalars, never code. Each file carries a SHA-256 ``digest`` of its content (tensor bytes and values
in a fixed order), checked on load, so a truncated, bit-flipped or hand-edited file is refused with a one-line
:class:`CheckpointError` naming it. Writes go to a temporary file in the same folder, are fsynced and then
renamed over the target (``os.replace``), so a killed process leaves either the old or the new file.
"""

from __future__ import annotations

import hashlib
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retinanet import atomic

FORMAT = "retinanet-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint or weight file is missing, truncated, tampered with or of the wrong kind."""


def _digest(obj: Any) -> str:
    """SHA-256 over a nested structure of dicts, lists, tuples, tensors and scalars, in a fixed order."""
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(f"D{len(x)}".encode())
            for key in sorted(x, key=repr):
                h.update(repr(key).encode())
                walk(x[key])
        elif isinstance(x, (list, tuple)):
            h.update(f"L{len(x)}".encode())
            for item in x:
                walk(item)
        elif x is None or isinstance(x, (bool, int, float, str)):
            h.update(f"S{type(x).__name__}{x!r}".encode())
        else:
            raise TypeError(f"cannot checkpoint a {type(x).__name__}")

    walk(obj)
    return h.hexdigest()


def save(payload: dict, path: str | Path) -> None:
    """Atomically write ``payload`` (plain containers, scalars and tensors) with its digest to ``path``."""
    content = {"format": FORMAT, "digest": _digest(payload), "payload": payload}
    atomic.write_with(path, lambda f: torch.save(content, f))


def load(path: str | Path) -> dict:
    """Load a file written by :func:`save` without executing code; CheckpointError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: refused: the file holds objects other than tensors and plain data, so it "
                              f"was not loaded ({first})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or corrupt "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT or "payload" not in content:
        raise CheckpointError(f"{path}: not a {FORMAT} file (missing format/payload fields)")
    try:
        digest = _digest(content["payload"])
    except TypeError as exc:
        raise CheckpointError(f"{path}: payload: {exc}") from None
    if digest != content.get("digest"):
        raise CheckpointError(f"{path}: digest mismatch: the file was modified or corrupted after it was written")
    return content["payload"]


def require(payload: dict, path: str | Path, keys: tuple[str, ...]) -> None:
    """CheckpointError naming the first of ``keys`` missing from ``payload``."""
    for key in keys:
        if key not in payload:
            raise CheckpointError(f"{path}: field {key!r} missing (not a checkpoint of this kind)")


# --------------------------------------------------------------------------------------------------------------
# RNG state, in weights_only-loadable form


# A checkpoint's ``rng`` field is ``{"ranks": [state of rank 0, state of rank 1, ...]}``, one :func:`rng_state` per
# process of the job that wrote it (gathered to rank 0), so that a run resumes on another number of processes:
# each rank restores its own state where the checkpoint has one and is seeded from (seed, iteration, rank) where
# it has none. Checkpoints written before held one process's state with every visible GPU's CUDA state.


def rng_state() -> dict:
    """This process's RNG states as tensors and plain scalars: torch's CPU generator, numpy, Python and, when this
    process has initialized CUDA, the CUDA generator of its current device (the only one it uses)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def derived_seed(seed: int, iteration: int, rank: int) -> int:
    """A 63-bit seed that depends only on (run seed, iteration, rank)."""
    return int(np.random.SeedSequence([seed, iteration, rank]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def reseed(seed: int, iteration: int, rank: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy and Python from :func:`derived_seed`."""
    derived = derived_seed(seed, iteration, rank)
    torch.manual_seed(derived)
    np.random.seed(derived % 2**32)
    random.seed(derived)


def set_rng_state(saved: dict, *, rank: int = 0, seed: int = 0, iteration: int = 0) -> bool:
    """Restore this process's RNG states from a checkpoint's ``rng`` field; True if they were restored, False if
    the checkpoint has no state for ``rank`` (a run resumed on more processes) and they were seeded from
    (``seed``, ``iteration``, ``rank``) instead. CUDA: the saved state goes to this process's current device when
    CUDA is available (of an older checkpoint's per-device list, the entry of that device's index, if any); where
    the checkpoint has none, the device is seeded the same way. Without CUDA, CUDA states are ignored."""
    states = saved["ranks"] if "ranks" in saved else [saved]
    if rank >= len(states):
        reseed(seed, iteration, rank)
        return False
    state = states[rank]
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if torch.cuda.is_available():
        device = torch.cuda.current_device()
        cuda = state.get("cuda")
        if isinstance(cuda, (list, tuple)):  # older format: every device's state, indexed by device
            cuda = cuda[device] if device < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
        else:
            torch.cuda.manual_seed(derived_seed(seed, iteration, rank))
    return True


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain ``state_dict`` file (e.g. backbone weights) or the ``model`` of a :func:`save` file, loaded with
    ``weights_only=True``; CheckpointError if it is unreadable or not a mapping of names to tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weight file not found")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused: the file holds objects other than tensors and plain data") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable weight file, truncated or corrupt "
                              f"({type(exc).__name__})") from None
    if isinstance(content, dict) and content.get("format") == FORMAT:
        payload = load(path)
        require(payload, path, ("model",))
        content = payload["model"]
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise CheckpointError(f"{path}: not a state_dict (expected a mapping of parameter names to tensors)")
    return content
