"""One table cell over seeds: the raw values, which seeds diverged, mean and sample standard deviation."""

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
        """Each seed's value, diverged seeds marked ``(div)``: ``s0 31.0, s1 0.0 (div)``."""
        parts = []
        for s, v, d in zip(self.seeds, self.values, self.diverged):
            text = "nan" if not math.isfinite(v) else f"{v:.{digits}f}"
            parts.append(f"s{s} {text}{' (div)' if d else ''}")
        return ", ".join(parts)


def seed_values(by_seed: dict[str, dict], column: str) -> SeedValues:
    """Collect ``column`` from ``{seed: metrics}`` (as from study_io.load_entry), seeds in sorted order.

    A seed whose metrics lack the column contributes NaN (shown, excluded from mean and std).
    """
    seeds = sorted(by_seed, key=lambda s: (len(s), s))
    values = tuple(float(by_seed[s].get(column, math.nan)) for s in seeds)
    diverged = tuple(by_seed[s].get("status") == "diverged" for s in seeds)
    return SeedValues(seeds=tuple(seeds), values=values, diverged=diverged)
