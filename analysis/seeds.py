"""One table cell over its runs: the raw values, which runs diverged, mean and sample standard deviation.

A run is keyed by its seed (``"0"``) or, on a pretraining replica other than the first, by replica and seed
(``"p1-s0"``, workflow/study.py ``replicate_key``). Where a setting was trained on several pretrainings of its
backbone, its spread splits into the seed spread within one pretraining and the spread between pretrainings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SeedValues:
    """Values of one metric for one setting, one per seed (a diverged seed counts as AP 0 and is marked)."""

    seeds: tuple[str, ...]
    values: tuple[float, ...]
    diverged: tuple[bool, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def finite(self) -> list[float]:
        return [v for v in self.values if math.isfinite(v)]

    @property
    def mean(self) -> float:
        vals = self.finite
        return sum(vals) / len(vals) if vals else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof = 1); NaN with fewer than two values."""
        vals = self.finite
        if len(vals) < 2:
            return math.nan
        m = sum(vals) / len(vals)
        return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))

    @property
    def pretrainings(self) -> tuple[int, ...]:
        """The pretraining replica of each run (0 for a plain seed key)."""
        return tuple(pretraining_of(s) for s in self.seeds)

    def _groups(self) -> list[list[float]]:
        groups: dict[int, list[float]] = {}
        for p, v in zip(self.pretrainings, self.values):
            if math.isfinite(v):
                groups.setdefault(p, []).append(v)
        return list(groups.values())

    @property
    def seed_std(self) -> float:
        """Pooled standard deviation between seeds within one pretraining: sqrt(sum over pretrainings of the squared
        deviations from that pretraining's mean / sum of (n_p - 1)); NaN without two runs on one pretraining."""
        dof = sum(len(g) - 1 for g in self._groups())
        if dof < 1:
            return math.nan
        ss = sum(sum((v - sum(g) / len(g)) ** 2 for v in g) for g in self._groups())
        return math.sqrt(ss / dof)

    @property
    def pretraining_std(self) -> float:
        """Standard deviation (ddof = 1) of the pretrainings' mean AP; NaN with fewer than two pretrainings. It
        holds the seed noise of those means too (seed_std / sqrt(runs per pretraining))."""
        means = [sum(g) / len(g) for g in self._groups()]
        if len(means) < 2:
            return math.nan
        m = sum(means) / len(means)
        return math.sqrt(sum((x - m) ** 2 for x in means) / (len(means) - 1))

    @property
    def n_diverged(self) -> int:
        return sum(self.diverged)

    def format(self, digits: int = 1) -> str:
        """``mean ± std`` (or the single value), e.g. ``31.2 ± 0.4``; ``-`` when empty."""
        if not self.finite:
            return "-"
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"

    def format_seeds(self, digits: int = 1) -> str:
        """Each run's value, diverged runs marked ``(div)``: ``s0 31.0, s1 0.0 (div), p1-s0 29.5``."""
        parts = []
        for s, v, d in zip(self.seeds, self.values, self.diverged):
            text = "nan" if not math.isfinite(v) else f"{v:.{digits}f}"
            parts.append(f"{s if pretraining_of(s) else 's' + s} {text}{' (div)' if d else ''}")
        return ", ".join(parts)


def pretraining_of(key: str) -> int:
    """The pretraining replica of a run key: ``"p1-s0"`` -> 1, ``"0"`` -> 0."""
    return int(key[1:].split("-", 1)[0]) if key.startswith("p") else 0


def seed_values(by_seed: dict[str, dict], column: str) -> SeedValues:
    """Collect ``column`` from ``{seed: metrics}`` (as from study_io.load_entry), seeds in sorted order.

    A seed whose metrics lack the column contributes NaN (shown, excluded from mean and std).
    """
    seeds = sorted(by_seed, key=lambda s: (len(s), s))
    values = tuple(float(by_seed[s].get(column, math.nan)) for s in seeds)
    diverged = tuple(by_seed[s].get("status") == "diverged" for s in seeds)
    return SeedValues(seeds=tuple(seeds), values=values, diverged=diverged)
