"""A run folder's record (``run.json``): the identity of the run it holds and, once finished, its result.

``train --resume auto`` decides from it what to do with a folder (:func:`decide`): reuse a finished run of the same
identity, resume an unfinished one from its checkpoint, or retrain when the identity differs (the old content is
moved to ``<run>.previous`` and the log names the changed fields). The record is not a Snakemake output: Snakemake
deletes a job's declared output (``result.json``) before it reruns the job (``--forcerun``, a changed param), so the
finished state must also live in a file it does not own. Without the record a rerun found no result, started at
iteration 0 and deleted ``model_final.pt``.

A folder from before the record existed (``config.resolved.yaml`` but no ``run.json``) is judged by its resolved
config's scientific fields; its result is taken from ``result.json`` or, where Snakemake has deleted that before
rerunning the job, rebuilt by the caller's ``recover`` from the folder's other files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from retinanet import atomic
from retinanet.config import ConfigError, load, to_dict
from retinanet.rundir.identity import differences, fingerprint, scientific

RECORD = "run.json"
FINISHED = ("completed", "diverged")


@dataclass(frozen=True)
class Decision:
    """What ``train --resume auto`` does with a run folder, and the log line that says why."""

    action: Literal["reuse", "resume", "fresh"]
    message: str
    result: dict[str, Any] | None = None


def read(out: Path) -> dict[str, Any] | None:
    """The folder's record, or None without one. A record that is not a JSON mapping raises ConfigError."""
    path = out / RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a run record ({exc}); move the folder away to retrain it") from None
    if not isinstance(data, dict) or not isinstance(data.get("identity"), dict):
        raise ConfigError(f"{path}: not a run record (no 'identity' mapping); move the folder away to retrain it")
    return data


def write(out: Path, ident: dict, result: dict[str, Any] | None) -> None:
    """Record ``ident`` (and the finished ``result``, or None while the run is unfinished)."""
    atomic.write_json(out / RECORD, {"fingerprint": fingerprint(ident), "identity": ident, "result": result})


def _legacy(out: Path, config: str, result: str,
            recover: Callable[[Path], dict[str, Any] | None] | None) -> dict[str, Any] | None:
    """A record for a folder written before ``run.json``: its resolved config's scientific fields (no input
    digests) and ``result.json`` if it says the run finished, else what ``recover(out)`` rebuilds."""
    if not (out / config).is_file():
        return None
    try:
        old = scientific(to_dict(load(out / config)))
    except ConfigError as exc:
        old = {"<unreadable config.resolved.yaml>": str(exc)}
    done = None
    if (out / result).is_file():
        try:
            data = json.loads((out / result).read_text())
            done = data if isinstance(data, dict) and data.get("status") in FINISHED else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            done = None
    if done is None and recover is not None:
        done = recover(out)
    return {"identity": {"config": old, "inputs": None}, "result": done}


def decide(out: Path, ident: dict, *, final: str, checkpoint: str, config: str, result: str,
           keep: tuple[str, ...] = (), recover: Callable[[Path], dict[str, Any] | None] | None = None) -> Decision:
    """What to do with run folder ``out`` for a run of identity ``ident`` (``final``, ``checkpoint``, ``config``,
    ``result``: the file names of the trained weights, the training state, the resolved config and the result;
    ``keep``: names that stay in the folder when it is retired; ``recover``: a finished run's result rebuilt from
    its folder, for folders from before the record whose ``result.json`` is gone).

    Same identity: ``reuse`` when the record holds a result (and, for a completed run, ``final`` exists),
    ``resume`` when ``checkpoint`` exists, else ``fresh``. Another identity: the folder's content is retired to
    ``<out>.previous`` (:func:`retire`) and the decision is ``fresh``, its message naming the changed fields.
    """
    previous = read(out) or _legacy(out, config, result, recover)
    if previous is None:
        return Decision("fresh", f"new run in {out}")
    changed = differences(previous["identity"], ident)
    if changed:
        moved = retire(out, keep)
        return Decision("fresh", f"retraining {out}: its run had another scientific config or inputs "
                                 f"({'; '.join(changed)}); the old content is in {moved}")
    done = previous.get("result")
    if isinstance(done, dict) and done.get("status") in FINISHED and (
            done["status"] == "diverged" or (out / final).is_file()):
        return Decision("reuse", f"reusing finished run {out}: {done['status']} at iteration {done.get('iteration')}"
                                 f", identity {fingerprint(ident)} unchanged (operational fields may differ)", done)
    if (out / checkpoint).is_file():
        return Decision("resume", f"resuming {out} from {checkpoint}")
    return Decision("fresh", f"restarting {out}: same run, no finished result and no checkpoint")


def retire(out: Path, keep: tuple[str, ...] = ()) -> Path:
    """Move everything in ``out`` except the names in ``keep`` to a fresh ``<out>.previous`` folder (replacing an
    older one); return that folder."""
    previous = out.with_name(f"{out.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    previous.mkdir(parents=True)
    for entry in sorted(out.iterdir()):
        if entry.name not in keep:
            os.replace(entry, previous / entry.name)
    return previous
