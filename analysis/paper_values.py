"""The paper's numbers (``analysis/paper_values.yaml``) as typed rows, each with its source and tolerance."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from analysis.errors import AnalysisInputError
from retinanet.config_parsing import not_utf8

PAPER_VALUES = Path(__file__).with_name("paper_values.yaml")


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: ``values[column]`` (None where the paper reports a diverged run)."""

    table: str
    key: str
    source: str
    values: dict[str, float | None]
    tolerance: dict[str, float | None]
    status: str = "completed"
    extra: dict = field(default_factory=dict)
    """Other fields of the row (alpha of Table 1b, depth/scale of 1e, label of Fig. 2, ...)."""

    def within_tolerance(self, column: str, ours: float) -> bool | None:
        """The tolerance rule: |ours - paper| <= tolerance; None when not judged (no value or no tolerance)."""
        paper, tol = self.values.get(column), self.tolerance.get(column)
        if paper is None or tol is None or not math.isfinite(ours):
            return None
        return abs(ours - paper) <= tol + 1e-9


@dataclass(frozen=True)
class PaperTable:
    id: str
    title: str
    setting: str
    columns: list[str]
    rows: list[PaperRow]
    published: list[PaperRow] = field(default_factory=list)
    """Other detectors' published rows (Table 2): paper values only."""

    def row(self, key: str) -> PaperRow | None:
        return next((r for r in self.rows if r.key == key), None)


@dataclass(frozen=True)
class PaperValues:
    tables: dict[str, PaperTable]
    figures: dict
    fig2_points: list[PaperRow]


_RESERVED = {"key", "source", "status", "tolerance"}


def _row(table: str, raw: dict, columns: list[str], tolerance: dict, where: str) -> PaperRow:
    if not isinstance(raw.get("key"), str) or not isinstance(raw.get("source"), str):
        raise AnalysisInputError(f"{where}: every row needs a string 'key' and 'source', got {raw!r}")
    tol = {**tolerance, **raw.get("tolerance", {})}
    values = {}
    for col in columns:
        v = raw.get(col)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise AnalysisInputError(f"{where}: {raw['key']}.{col} must be a number or null, got {v!r}")
        values[col] = None if v is None else float(v)
    extra = {k: v for k, v in raw.items() if k not in _RESERVED and k not in columns}
    return PaperRow(table=table, key=raw["key"], source=raw["source"], values=values, tolerance=tol,
                    status=raw.get("status", "completed"), extra=extra)


def load_paper_values(path: str | Path = PAPER_VALUES) -> PaperValues:
    """Parse the YAML; raises AnalysisInputError naming the file on a malformed row."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise AnalysisInputError(f"{path}: cannot load paper values ({exc})") from None
    except UnicodeDecodeError as exc:
        raise AnalysisInputError(f"{path}: paper values file is {not_utf8(exc)}") from None
    tables = {}
    for tid, t in data["tables"].items():
        where = f"{path}: tables.{tid}"
        cols = list(t["columns"])
        tol = dict(t["tolerance"])
        rows = [_row(tid, r, cols, tol, where) for r in t["rows"]]
        published = [_row(tid, r, cols, tol, where) for r in t.get("published", [])]
        tables[str(tid)] = PaperTable(id=str(tid), title=t["title"], setting=t["setting"], columns=cols, rows=rows,
                                      published=published)
    fig2 = data["figures"]["fig2"]
    points = [_row("fig2", r, list(fig2["columns"]), dict(fig2["tolerance"]), f"{path}: figures.fig2")
              for r in fig2["points"]]
    return PaperValues(tables=tables, figures=data["figures"], fig2_points=points)
