"""Tables 1a-1e, 2, 3 and section 5.1 regenerated beside the paper's: CSV (long) and Markdown (wide).

Each cell shows the paper's value, ours (mean ± std over seeds, and each seed's value; a diverged seed counts as
AP 0 and is marked), and the difference ours - paper. At ``paper`` scale each value is also judged against the
paper's tolerance (``paper_values.yaml``); at smaller scales absolute AP is not comparable and is not judged.

CLI::

    python -m analysis.tables --study study.json --out-dir results/<scale>/tables [--tables 1a 1b ...]
        [--paper-values analysis/paper_values.yaml]
    -> <out-dir>/table_<id>.csv and <out-dir>/table_<id>.md for each table id (1a 1b 1c 1d 1e 2 3 5.1)
"""

from __future__ import annotations

import csv
import io
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from analysis.paper_values import PAPER_VALUES, PaperRow, PaperTable, load_paper_values
from analysis.seeds import SeedValues, seed_values
from analysis.study_io import Study, load_study, load_table, load_table_1b

TABLE_IDS = ("1a", "1b", "1c", "1d", "1e", "2", "3", "5.1")
CSV_FIELDS = ("table", "key", "column", "alpha", "winner", "paper", "paper_source", "tolerance", "ours_mean",
              "ours_std", "n_seeds", "seeds", "diverged_seeds", "delta", "within_tolerance", "note")


@dataclass(frozen=True)
class TableRow:
    """One row of a regenerated table: the paper's row (None if the paper has none) and ours per column."""

    table: str
    key: str
    paper: PaperRow | None
    ours: dict[str, SeedValues]
    note: str = ""
    alpha: float | None = None
    """Table 1b: the alpha of this candidate."""
    winner: bool = True
    """Table 1b: whether this candidate won its gamma (best mean AP); always True elsewhere."""
    candidates: dict[float, SeedValues] = field(default_factory=dict)
    """Table 1b winner rows: AP of every alpha candidate of the gamma."""


def _ordered_keys(paper: PaperTable, ours_keys) -> list[str]:
    keys = [r.key for r in paper.rows]
    return keys + [k for k in ours_keys if k not in keys]


def _note(ours: dict[str, SeedValues], paper: PaperRow | None) -> str:
    notes = []
    ap = ours.get("AP")
    if ap is not None and ap.n_diverged:
        notes.append(f"{ap.n_diverged}/{ap.n} seeds diverged (AP 0)")
    if not ours:
        notes.append("not run in this study")
    if paper is not None and paper.status == "diverged":
        notes.append("paper: diverges")
    return "; ".join(notes)


def build_rows(paper: PaperTable, ours: dict[str, dict[str, dict]]) -> list[TableRow]:
    """Rows of any table but 1b: ``ours`` is ``{key: {seed: metrics}}`` (study_io.load_table).

    Paper rows come first in the paper's order, then keys only we ran; Table 2's other detectors are appended as
    published rows with no values of ours.
    """
    rows = []
    for key in _ordered_keys(paper, ours):
        by_seed = ours.get(key, {})
        vals = {c: seed_values(by_seed, c) for c in paper.columns} if by_seed else {}
        prow = paper.row(key)
        rows.append(TableRow(table=paper.id, key=key, paper=prow, ours=vals, note=_note(vals, prow)))
    for p in paper.published:
        rows.append(TableRow(table=paper.id, key=p.key, paper=p, ours={}, note=f"published ({p.extra.get('kind')})"))
    return rows


def best_alpha(candidates: dict[float, SeedValues]) -> float | None:
    """The alpha with the best mean AP (ties: the smaller alpha); None when no candidate has a value."""
    scored = [(a, v.mean) for a, v in sorted(candidates.items()) if math.isfinite(v.mean)]
    if not scored:
        return None
    best = max(m for _, m in scored)
    return next(a for a, m in scored if m == best)


def build_rows_1b(paper: PaperTable, ours: dict[str, dict[float, dict[str, dict]]]) -> list[TableRow]:
    """Table 1b: for each gamma, every alpha candidate; the one with the best mean AP is the gamma's row.

    ``ours`` is ``{gamma key: {alpha: {seed: metrics}}}`` (study_io.load_table_1b). Winner rows come first in each
    gamma, and their note says which alpha won and which the paper chose.
    """
    rows = []
    for key in _ordered_keys(paper, ours):
        prow = paper.row(key)
        cands = ours.get(key, {})
        ap = {a: seed_values(m, "AP") for a, m in cands.items()}
        won = best_alpha(ap)
        if won is None:
            rows.append(TableRow(table="1b", key=key, paper=prow, ours={}, note=_note({}, prow)))
            continue
        paper_alpha = prow.extra.get("alpha") if prow else None
        for alpha in [won] + sorted(a for a in cands if a != won):
            vals = {c: seed_values(cands[alpha], c) for c in paper.columns}
            note = _note(vals, prow)
            if alpha == won:
                note = "; ".join(filter(None, [f"alpha won: {alpha:g} (paper: {paper_alpha:g})"
                                               if paper_alpha is not None else f"alpha won: {alpha:g}", note]))
            rows.append(TableRow(table="1b", key=key, paper=prow, ours=vals, note=note, alpha=alpha,
                                 winner=alpha == won, candidates=ap if alpha == won else {}))
    return rows


def build_table(paper: PaperTable, study: Study) -> list[TableRow]:
    """Load the table's runs from the study and build its rows."""
    if paper.id == "1b":
        return build_rows_1b(paper, load_table_1b(study))
    return build_rows(paper, load_table(study, paper.id))


def _fmt(v: float | None, digits: int = 1) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _judge(row: TableRow, col: str, scale: str) -> str:
    if scale != "paper":
        return "n/a"
    if row.paper is None or col not in row.ours:
        return ""
    if row.paper.status == "diverged":
        return str(row.ours[col].n_diverged == row.ours[col].n)
    verdict = row.paper.within_tolerance(col, row.ours[col].mean)
    return "" if verdict is None else str(verdict)


def csv_rows(rows: list[TableRow], columns: list[str], scale: str) -> list[dict]:
    """Long format: one line per (row, column)."""
    out = []
    for r in rows:
        for col in columns:
            v = r.ours.get(col)
            paper = r.paper.values.get(col) if r.paper else None
            delta = v.mean - paper if v is not None and paper is not None else math.nan
            out.append({
                "table": r.table, "key": r.key, "column": col,
                "alpha": "" if r.alpha is None else f"{r.alpha:g}", "winner": r.winner,
                "paper": "diverged" if r.paper and r.paper.status == "diverged" else _fmt(paper, 3),
                "paper_source": r.paper.source if r.paper else "",
                "tolerance": _fmt(r.paper.tolerance.get(col) if r.paper else None, 2),
                "ours_mean": _fmt(v.mean if v else None, 3), "ours_std": _fmt(v.std if v else None, 3),
                "n_seeds": v.n if v else 0, "seeds": v.format_seeds(3) if v else "",
                "diverged_seeds": v.n_diverged if v else 0, "delta": _fmt(delta, 3),
                "within_tolerance": _judge(r, col, scale), "note": r.note,
            })
    return out


def to_csv(rows: list[TableRow], columns: list[str], scale: str) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(rows, columns, scale))
    return buf.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(paper: PaperTable, rows: list[TableRow], scale: str) -> str:
    """Wide Markdown: per column paper | ours (mean ± std) | Δ; then each seed's AP and notes.

    Table 1b shows only each gamma's winning alpha (the candidates are listed in the note and the CSV).
    """
    cols = paper.columns
    unit = {"time": " ms"}
    head = ["setting"]
    for c in cols:
        head += [f"{c} paper", f"{c} ours", f"{c} Δ"]
    head += ["AP per seed", "notes"]
    lines = [f"### Table {paper.id}: {paper.title}", "",
             f"Paper setting: {paper.setting}. Study scale: `{scale}`."
             + ("" if scale == "paper" else " Absolute values are not comparable with COCO at this scale; compare "
                "orderings and gaps."), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if not r.winner:
            continue
        cells = [_md_escape(r.key)]
        for c in cols:
            v = r.ours.get(c)
            p = r.paper.values.get(c) if r.paper else None
            if r.paper and r.paper.status == "diverged":
                ptxt = "diverges"
            else:
                ptxt = _fmt(p, 0 if c == "time" else 1) + (unit.get(c, "") if p is not None else "")
            otxt = v.format(1) if v is not None else ""
            delta = _fmt(v.mean - p, 1) if v is not None and p is not None and math.isfinite(v.mean) else ""
            if delta and not delta.startswith("-"):
                delta = "+" + delta
            cells += [ptxt, otxt, delta]
        ap = r.ours.get("AP")
        note = r.note
        if r.candidates:
            note += "; candidates: " + ", ".join(f"α={a:g}: {v.format(1)}" for a, v in sorted(r.candidates.items()))
        cells += [ap.format_seeds(1) if ap else "", _md_escape(note)]
        lines.append("| " + " | ".join(cells) + " |")
    sources = sorted({r.paper.source.split(",")[0] for r in rows if r.paper})
    lines += ["", f"Paper values: {', '.join(sources)} (analysis/paper_values.yaml).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from analysis.cli import run_cli
    from retinanet.atomic import write_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="study manifest (study.json)")
    parser.add_argument("--out-dir", required=True, help="folder for table_<id>.csv and table_<id>.md")
    parser.add_argument("--tables", nargs="+", default=list(TABLE_IDS), choices=TABLE_IDS)
    parser.add_argument("--paper-values", default=str(PAPER_VALUES))

    def run(args) -> None:
        study = load_study(args.study)
        pv = load_paper_values(args.paper_values)
        built = {tid: build_table(pv.tables[tid], study) for tid in args.tables}  # read everything before writing
        for tid, rows in built.items():
            paper = pv.tables[tid]
            write_text(Path(args.out_dir) / f"table_{tid}.csv", to_csv(rows, paper.columns, study.scale))
            write_text(Path(args.out_dir) / f"table_{tid}.md", to_markdown(paper, rows, study.scale))

    return run_cli(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
