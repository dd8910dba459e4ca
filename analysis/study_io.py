"""Reading the study manifest (``study.json``) and the run outputs it points to.

The manifest is written by the study DAG (workflow/); its format is in the team contract::

    {"scale": "mini", "seeds": [0, 1, 2], "deviations": [{"field", "paper", "ours", "reason"}], "hardware": ...,
     "tables": {"1a": [{"key": "alpha=0.75", "run": "...", "metrics": {"0": "<path>/metrics.json", ...}}],
                "1b": [{"key": "gamma=2", "candidates": [{"alpha": 0.25, "run": ..., "metrics": {...}}]}],
                "1e": [{"key": ..., "metrics": {...}, "timing": {"0": "<path>/timing.json"}}], ...},
     "figures": {"fig4": {"run": ..., "samples": "<path>.npz"},   # exported: "summary": "fig4_cdf.json"
                 "fig7": [{"gamma": g, "beta": b, "run": ..., "metrics": {...}}], "fig2": {"table": "1e"}},
     "runs": {"<run>-s0": {"dir": "<run dir>"}}}          # optional: run dirs (training curves, wall time)

Relative paths are resolved against the current directory (where Snakemake runs), then against the manifest's
folder; an exported study's (``"export"`` in the manifest, :mod:`analysis.export`) against its folder only. Every
malformed or missing input raises :class:`AnalysisInputError` naming the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.errors import AnalysisInputError
from retinanet.config_parsing import not_utf8

METRIC_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
"""COCO AP columns of ``metrics.json`` (percent, 0-100), in the paper's order."""


@dataclass(frozen=True)
class Study:
    """A loaded manifest. ``data`` is the parsed JSON; ``path`` its file (for messages and relative paths)."""

    path: Path
    data: dict

    @property
    def scale(self) -> str:
        return self.data["scale"]

    @property
    def seeds(self) -> list:
        return list(self.data.get("seeds", []))

    @property
    def deviations(self) -> list[dict]:
        return list(self.data.get("deviations", []))

    def table(self, table_id: str) -> list[dict]:
        """The manifest's entries of one table ([] when the study has none)."""
        return list(self.data.get("tables", {}).get(table_id, []))

    def figure(self, name: str) -> Any:
        return self.data.get("figures", {}).get(name)

    @property
    def exported(self) -> bool:
        """Whether this is an exported study (results/<scale>/study, :mod:`analysis.export`): its paths are
        relative to the manifest's folder only."""
        return "export" in self.data

    def resolve(self, p: str | Path) -> Path:
        """A manifest path: absolute as is; relative to the cwd if it exists there, else to the manifest's folder
        (an exported study's: to the manifest's folder only)."""
        p = Path(p)
        if self.exported and not p.is_absolute():
            return self.path.parent / p
        if p.is_absolute() or p.exists():
            return p
        alt = self.path.parent / p
        return alt if alt.exists() else p


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file's content or AnalysisInputError naming it (missing, unreadable, not UTF-8)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnalysisInputError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise AnalysisInputError(f"{path}: cannot read {what} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise AnalysisInputError(f"{path}: {what} is {not_utf8(exc)}") from None


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse a JSON file or raise AnalysisInputError naming it."""
    path = Path(path)
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnalysisInputError(f"{path}: malformed {what}: {exc.msg} at line {exc.lineno}") from None


def load_study(path: str | Path) -> Study:
    """Load and check the manifest's top-level shape."""
    path = Path(path)
    data = read_json(path, "study manifest")
    if not isinstance(data, dict):
        raise AnalysisInputError(f"{path}: study manifest must be a JSON object")
    if not isinstance(data.get("scale"), str):
        raise AnalysisInputError(f"{path}: field 'scale' must be a string, got {data.get('scale')!r}")
    for name, tp in (("tables", dict), ("figures", dict), ("deviations", list), ("seeds", list), ("runs", dict),
                     ("export", dict)):
        if name in data and not isinstance(data[name], tp):
            raise AnalysisInputError(f"{path}: field '{name}' must be a JSON {tp.__name__}")
    for table_id, entries in data.get("tables", {}).items():
        if not isinstance(entries, list):
            raise AnalysisInputError(f"{path}: tables.{table_id} must be a list of entries")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                raise AnalysisInputError(f"{path}: tables.{table_id}[{i}] needs a string 'key'")
    return Study(path=path, data=data)


def read_metrics(path: str | Path) -> dict:
    """One run's ``metrics.json``: AP columns as floats and ``status`` ("completed" or "diverged").

    A diverged run's AP columns are 0 whatever the file says (the contract: a diverged run gives AP 0).
    """
    path = Path(path)
    data = read_json(path, "metrics file")
    if not isinstance(data, dict):
        raise AnalysisInputError(f"{path}: metrics file must hold a JSON object")
    status = data.get("status", "completed")
    if status not in ("completed", "diverged"):
        raise AnalysisInputError(f"{path}: field 'status' is {status!r}, expected 'completed' or 'diverged'")
    out: dict = {"status": status, "path": str(path)}
    for col in METRIC_COLUMNS:
        if status == "diverged":
            out[col] = 0.0
            continue
        value = data.get(col)
        if value is None and col != "AP":  # null: COCOeval's -1, no ground truth of that size
            out[col] = math.nan
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise AnalysisInputError(f"{path}: field '{col}' must be a finite number, got {value!r}")
        if value < 0 and col in ("APs", "APm", "APl"):  # pycocotools reports -1 for an empty size bucket
            out[col] = math.nan
            continue
        if not 0.0 <= value <= 100.0:
            raise AnalysisInputError(f"{path}: field '{col}' = {value!r} is outside [0, 100] (percent expected)")
        out[col] = float(value)
    return out


def read_timing(path: str | Path) -> tuple[float, str]:
    """``(median ms per image, device name)`` from a ``timing.json``; a run that did not complete (no timing,
    ``ms_per_image_median`` null) gives NaN ms."""
    path = Path(path)
    data = read_json(path, "timing file")
    if not isinstance(data, dict):
        raise AnalysisInputError(f"{path}: timing file must hold a JSON object")
    value = data.get("ms_per_image_median")
    device = data.get("device")
    name = str(device.get("name", "")) if isinstance(device, dict) else str(device or "")
    if value is None and data.get("status", "completed") != "completed":
        return math.nan, name
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise AnalysisInputError(f"{path}: field 'ms_per_image_median' must be a positive number, got {value!r}")
    return float(value), name


def _seed_paths(study: Study, entry: dict, field: str, where: str) -> dict[str, Path]:
    paths = entry.get(field)
    if not isinstance(paths, dict) or not paths:
        raise AnalysisInputError(f"{study.path}: {where} needs a non-empty '{field}' mapping seed -> path")
    return {str(seed): study.resolve(p) for seed, p in paths.items()}


def load_entry(study: Study, entry: dict, where: str) -> dict[str, dict]:
    """Per seed, the metrics of one manifest entry, with ``time`` (ms) added when the entry has ``timing``."""
    metrics = {seed: read_metrics(p) for seed, p in _seed_paths(study, entry, "metrics", where).items()}
    if "timing" in entry:
        for seed, p in _seed_paths(study, entry, "timing", where).items():
            ms, device = read_timing(p)
            metrics.setdefault(seed, {"status": "missing"}).update(time=ms, device=device)
    return metrics


def load_table(study: Study, table_id: str) -> dict[str, dict[str, dict]]:
    """``{key: {seed: metrics}}`` for one table (Table 1b: use :func:`load_table_1b`)."""
    return {e["key"]: load_entry(study, e, f"tables.{table_id}[{e['key']}]") for e in study.table(table_id)}


def load_table_1b(study: Study) -> dict[str, dict[float, dict[str, dict]]]:
    """``{gamma key: {alpha: {seed: metrics}}}``: every alpha candidate of every gamma of Table 1b."""
    out: dict[str, dict[float, dict[str, dict]]] = {}
    for e in study.table("1b"):
        where = f"tables.1b[{e['key']}]"
        cands = e.get("candidates")
        if not isinstance(cands, list) or not cands:
            raise AnalysisInputError(f"{study.path}: {where} needs a non-empty 'candidates' list")
        out[e["key"]] = {}
        for c in cands:
            alpha = c.get("alpha")
            if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
                raise AnalysisInputError(f"{study.path}: {where} candidate needs a numeric 'alpha', got {alpha!r}")
            out[e["key"]][float(alpha)] = load_entry(study, c, f"{where} alpha={alpha}")
    return out


@dataclass(frozen=True)
class LossSamples:
    """Figure 4's samples: binary logits of positives [P] and negatives [Q] (float64) and the file's counts."""

    pos: np.ndarray
    neg: np.ndarray
    meta: dict

    @property
    def num_pos(self) -> int:
        return int(self.pos.size)

    @property
    def num_neg(self) -> int:
        return int(self.neg.size)

    def describe(self) -> str:
        """How many samples (:func:`describe_samples`)."""
        return describe_samples(self.num_pos, self.num_neg, self.meta)

    def cdf_curves(self) -> dict:
        """Figure 4's curves (:func:`analysis.fig4_data.cdf_curves`)."""
        from analysis.fig4_data import cdf_curves

        return cdf_curves(self.pos, self.neg)

    def half_loss_fractions(self) -> dict[str, dict[float, float]]:
        """Claim C8's half-loss fractions per set and gamma (:func:`analysis.fig4_data.half_loss_fractions`)."""
        from analysis.fig4_data import half_loss_fractions

        return half_loss_fractions(self.pos, self.neg)

    def hardest_shares(self) -> dict[str, dict[float, float]]:
        """Claim C8's loss shares of the hardest samples (:func:`analysis.fig4_data.hardest_shares`)."""
        from analysis.fig4_data import hardest_shares

        return hardest_shares(self.pos, self.neg)


def describe_samples(num_pos: int, num_neg: int, meta: dict) -> str:
    """How many samples, e.g. ``1,234 positive and 100,000 negative samples (a uniform subsample of 9,876,543)
    from 100 images`` (``meta``: the loss-samples file's scalars ``num_neg_total`` and ``num_images``)."""
    total = meta.get("num_neg_total")
    sub = f" (a uniform subsample of {total:,})" if total and total > num_neg else ""
    imgs = meta.get("num_images")
    return f"{num_pos:,} positive and {num_neg:,} negative samples{sub}" + (f" from {imgs:,} images" if imgs else "")


def load_loss_samples(path: str | Path) -> LossSamples:
    """Binary logits of positive and negative samples from a loss-samples ``.npz`` (Figure 4).

    Two layouts are accepted:
    - ``pos_logits`` [P] and ``neg_logits`` [Q] (``python -m retinanet loss-samples``; scalars ``num_images``,
      ``num_neg_total`` etc. are kept in ``meta``);
    - ``logits`` [S, K] and ``labels`` [S] (>= 0 fg class, -1 bg, -2 ignored; ``model.anchor_outputs``): a positive
      sample is the assigned class of a fg anchor; every other (anchor, class) entry of a non-ignored anchor is a
      negative sample (sigmoid classifiers: each class is a binary problem).
    """
    path = Path(path)
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise AnalysisInputError(f"{path}: loss-samples file not found") from None
    except (OSError, ValueError) as exc:
        raise AnalysisInputError(f"{path}: malformed loss-samples file ({exc})") from None
    if "pos_logits" in arrays and "neg_logits" in arrays:
        pos, neg = arrays["pos_logits"].reshape(-1), arrays["neg_logits"].reshape(-1)
    elif "logits" in arrays and "labels" in arrays:
        logits, labels = arrays["logits"], arrays["labels"].astype(np.int64)
        if logits.ndim != 2 or labels.shape != logits.shape[:1]:
            raise AnalysisInputError(f"{path}: expected logits [S, K] and labels [S], got {logits.shape} and "
                                     f"{labels.shape}")
        if labels.size and labels.max() >= logits.shape[1]:
            raise AnalysisInputError(f"{path}: label {labels.max()} out of range for K = {logits.shape[1]}")
        valid = labels >= -1
        logits, labels = logits[valid], labels[valid]
        onehot = np.zeros(logits.shape, dtype=bool)
        fg = labels >= 0
        onehot[np.flatnonzero(fg), labels[fg]] = True
        pos, neg = logits[onehot], logits[~onehot]
    else:
        raise AnalysisInputError(f"{path}: expected arrays 'pos_logits' and 'neg_logits' (or 'logits' and "
                                 f"'labels'), found {sorted(arrays)}")
    pos, neg = pos.astype(np.float64), neg.astype(np.float64)
    if pos.size == 0 or neg.size == 0:
        raise AnalysisInputError(f"{path}: needs at least one positive and one negative sample "
                                 f"(got {pos.size} and {neg.size})")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise AnalysisInputError(f"{path}: logits must be finite")
    meta = {k: v.item() for k, v in arrays.items() if v.ndim == 0}
    return LossSamples(pos=pos, neg=neg, meta=meta)


def read_wall_time(path: str | Path) -> float:
    """Wall seconds from a Snakemake benchmark TSV (column ``s``) or a run's ``result.json`` (``wall_s``)."""
    path = Path(path)
    if path.suffix == ".json":
        data = read_json(path, "run result")
        value = data.get("wall_s") if isinstance(data, dict) else None
    else:
        lines = read_text(path, "benchmark file").splitlines()
        header = lines[0].split("\t") if lines else []
        if "s" not in header or len(lines) < 2:
            raise AnalysisInputError(f"{path}: expected a Snakemake benchmark TSV with an 's' column")
        try:
            value = float(lines[1].split("\t")[header.index("s")])
        except (ValueError, IndexError):
            raise AnalysisInputError(f"{path}: malformed 's' value in benchmark file") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise AnalysisInputError(f"{path}: wall time must be a non-negative number, got {value!r}")
    return float(value)


def read_log(path: str | Path) -> list[dict]:
    """A run's ``log.jsonl``: one JSON object per logging step (iteration, loss_cls, loss_box, loss, lr, ...)."""
    path = Path(path)
    lines = read_text(path, "training log").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AnalysisInputError(f"{path}: line {i} is not JSON ({exc.msg})") from None
    return out
