"""Figure 4's summary: what the figure and claim C8 read of a model's loss samples, small enough to commit.

A loss-samples file holds up to 10^6 logits (megabytes). The exported study (:mod:`analysis.export`) keeps instead
each CDF of Figure 4 at the figure's points (rounded to :data:`CURVE_DECIMALS`) and claim C8's statistics computed
from all the samples (exact). Both are read through one interface, :class:`Fig4Data`: a
:class:`~analysis.study_io.LossSamples` computes the numbers, a :class:`Fig4Summary` holds them. The file::

    {"format": 1, "num_pos": P, "num_neg": Q, "meta": {"num_images": ..., "num_neg_total": ...},
     "gammas": [0, 0.5, 1, 2], "hardest_fraction": 0.2, "points": 1001,
     "pos": {"cdf": [[...points] per gamma], "half_loss_fraction": [per gamma], "hardest_share": [per gamma]},
     "neg": {...}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from analysis.errors import AnalysisInputError
from analysis.study_io import LossSamples, Study, describe_samples, load_loss_samples, read_json

SUMMARY_FORMAT = 1
CURVE_DECIMALS = 5
"""Decimals kept of each CDF value: far below a pixel of the figure, a fifth of the file's size."""
SETS = ("pos", "neg")


class Fig4Data(Protocol):
    """What Figure 4 and claim C8 read: the sample counts, the CDF curves and C8's statistics."""

    @property
    def num_pos(self) -> int: ...

    @property
    def num_neg(self) -> int: ...

    def describe(self) -> str: ...

    def cdf_curves(self) -> dict: ...

    def half_loss_fractions(self) -> dict[str, dict[float, float]]: ...

    def hardest_shares(self) -> dict[str, dict[float, float]]: ...


@dataclass(frozen=True)
class Fig4Summary:
    """A summary's numbers (:func:`summarize`, :func:`load_summary`); ``curves`` is shaped as
    :func:`analysis.fig4_data.cdf_curves`' result, ``half`` and ``shares`` as C8's statistics."""

    counts: tuple[int, int]
    meta: dict
    curves: dict
    half: dict[str, dict[float, float]]
    shares: dict[str, dict[float, float]]

    @property
    def num_pos(self) -> int:
        return self.counts[0]

    @property
    def num_neg(self) -> int:
        return self.counts[1]

    def describe(self) -> str:
        return describe_samples(self.num_pos, self.num_neg, self.meta)

    def cdf_curves(self) -> dict:
        return self.curves

    def half_loss_fractions(self) -> dict[str, dict[float, float]]:
        return self.half

    def hardest_shares(self) -> dict[str, dict[float, float]]:
        return self.shares


def summarize(samples: LossSamples) -> Fig4Summary:
    """The summary of loss samples: their curves rounded to :data:`CURVE_DECIMALS`, C8's statistics exact."""
    curves = samples.cdf_curves()
    rounded = {"x": curves["x"], **{s: {g: np.round(c, CURVE_DECIMALS) for g, c in curves[s].items()} for s in SETS}}
    return Fig4Summary(counts=(samples.num_pos, samples.num_neg), meta=dict(samples.meta), curves=rounded,
                       half=samples.half_loss_fractions(), shares=samples.hardest_shares())


def summary_json(summary: Fig4Summary) -> dict:
    """The summary as the JSON object of the file (module docstring)."""
    from analysis.fig4_data import FIG4_GAMMAS, HARDEST_FRACTION

    def one(s: str) -> dict:
        return {"cdf": [[round(float(v), CURVE_DECIMALS) for v in summary.curves[s][g]] for g in FIG4_GAMMAS],
                "half_loss_fraction": [summary.half[s][g] for g in FIG4_GAMMAS],
                "hardest_share": [summary.shares[s][g] for g in FIG4_GAMMAS]}

    return {"format": SUMMARY_FORMAT, "num_pos": summary.num_pos, "num_neg": summary.num_neg,
            "meta": {k: v for k, v in summary.meta.items() if isinstance(v, (int, float, str))},
            "gammas": list(FIG4_GAMMAS), "hardest_fraction": HARDEST_FRACTION,
            "points": len(summary.curves["x"]), **{s: one(s) for s in SETS}}


def _numbers(path: Path, where: str, value, n: int) -> list[float]:
    if not isinstance(value, list) or len(value) != n or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise AnalysisInputError(f"{path}: field '{where}' must be a list of {n} finite numbers")
    return [float(v) for v in value]


def load_summary(path: str | Path) -> Fig4Summary:
    """Read a summary file; a missing or malformed one, or one made for other gammas or another hardest
    fraction than this code's (regenerate it: the numbers would be C8's old ones), raises AnalysisInputError
    naming the file and field."""
    from analysis.fig4_data import FIG4_GAMMAS, HARDEST_FRACTION

    path = Path(path)
    data = read_json(path, "Figure 4 summary")
    if not isinstance(data, dict) or data.get("format") != SUMMARY_FORMAT:
        raise AnalysisInputError(f"{path}: not a Figure 4 summary of format {SUMMARY_FORMAT} (field 'format')")
    if data.get("gammas") != list(FIG4_GAMMAS) or data.get("hardest_fraction") != HARDEST_FRACTION:
        raise AnalysisInputError(f"{path}: made for gammas {data.get('gammas')} and hardest fraction "
                                 f"{data.get('hardest_fraction')}, this code uses {list(FIG4_GAMMAS)} and "
                                 f"{HARDEST_FRACTION}: export the study again")
    counts = tuple(data.get(k) for k in ("num_pos", "num_neg"))
    if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in counts):
        raise AnalysisInputError(f"{path}: fields 'num_pos' and 'num_neg' must be positive integers, got {counts}")
    points = data.get("points")
    if not isinstance(points, int) or isinstance(points, bool) or points < 2:
        raise AnalysisInputError(f"{path}: field 'points' must be an integer >= 2, got {points!r}")
    if not isinstance(data.get("meta"), dict):
        raise AnalysisInputError(f"{path}: field 'meta' must be a JSON object")
    curves: dict = {"x": np.linspace(0.0, 1.0, points)}
    half: dict = {}
    shares: dict = {}
    for s in SETS:
        block = data.get(s)
        if not isinstance(block, dict):
            raise AnalysisInputError(f"{path}: field '{s}' must be a JSON object")
        cdf = block.get("cdf")
        if not isinstance(cdf, list) or len(cdf) != len(FIG4_GAMMAS):
            raise AnalysisInputError(f"{path}: field '{s}.cdf' must hold one curve per gamma {list(FIG4_GAMMAS)}")
        curves[s] = {g: np.asarray(_numbers(path, f"{s}.cdf[{i}]", c, points)) for i, (g, c)
                     in enumerate(zip(FIG4_GAMMAS, cdf))}
        half[s] = dict(zip(FIG4_GAMMAS, _numbers(path, f"{s}.half_loss_fraction", block.get("half_loss_fraction"),
                                                 len(FIG4_GAMMAS))))
        shares[s] = dict(zip(FIG4_GAMMAS, _numbers(path, f"{s}.hardest_share", block.get("hardest_share"),
                                                   len(FIG4_GAMMAS))))
    return Fig4Summary(counts=counts, meta=data["meta"], curves=curves, half=half, shares=shares)


def load_fig4(study: Study) -> Fig4Data | None:
    """Figure 4's data of a study: ``figures.fig4.samples`` (a loss-samples file, the DAG's work folder) or
    ``figures.fig4.summary`` (a summary, an exported study); None when the manifest lists neither."""
    entry = study.figure("fig4")
    if not isinstance(entry, dict):
        return None
    for field, load in (("summary", load_summary), ("samples", load_loss_samples)):
        if field in entry:
            if not isinstance(entry[field], str):
                raise AnalysisInputError(f"{study.path}: figures.fig4.{field} must be a path")
            return load(study.resolve(entry[field]))
    return None
