"""The report's "Sources of variance" section: how much of a setting's AP spread is the run seed's and how much the
backbone's pretraining's.

Every run of a depth starts from a pretrained backbone. Where the study trains a row on several pretrainings
(``seeds.pretrainings``, workflow/study.py), its runs are keyed ``"<seed>"`` on the first pretraining and
``"p<k>-s<seed>"`` on replica ``k``; :class:`analysis.seeds.SeedValues` splits their spread into the seed std within
a pretraining and the std between the pretrainings' means. The verdict rule (analysis/verdict.py) holds a contrast to
the std over all runs, which contains both.
"""

from __future__ import annotations

from analysis.seeds import SeedValues, seed_values
from analysis.study_io import Study, load_table


def _fmt(x: float) -> str:
    return "-" if x != x else f"{x:.2f}"


def sampled_rows(study: Study) -> list[tuple[str, str, SeedValues]]:
    """``(table, row key, AP over its runs)`` of every row trained on more than one pretraining, in table order."""
    out = []
    for tid in study.data.get("tables", {}):
        if tid == "1b":
            continue  # candidates per alpha; the headline rows are in Tables 1a, 1d and 3
        for key, by_run in load_table(study, tid).items():
            v = seed_values(by_run, "AP")
            if len(set(v.pretrainings)) > 1:
                out.append((tid, key, v))
    return out


def variance_section(study: Study) -> str:
    """Markdown: per sampled row, its runs, mean, std over all runs, seed std within a pretraining and std between
    pretrainings; where the study sampled none, one paragraph saying what its spreads leave out."""
    lines = ["## Sources of variance", ""]
    rows = sampled_rows(study)
    if not rows:
        lines += ["Every run of a depth starts from the same pretrained backbone, so the spreads in this report are "
                  "over run seeds only: a different pretraining shifts every run of that depth together, by more "
                  "than the seed spread at `mini` (`seeds.pretrainings` samples it; docs/scales.md).", ""]
        return "\n".join(lines)
    lines += ["AP spread of the rows trained on several pretrainings of their backbone (`seeds.pretrainings`): the "
              "std over all runs (what the verdict rule uses), the seed std within one pretraining (pooled) and "
              "the std between the pretrainings' mean AP (which still holds their seed noise).", "",
              "| table | row | runs | mean AP | std, all runs | seed std | between pretrainings |",
              "|---|---|---|---|---|---|---|"]
    for tid, key, v in rows:
        lines.append(f"| {tid} | {key} | {v.format_seeds(1)} | {_fmt(v.mean)} | {_fmt(v.std)} | {_fmt(v.seed_std)} | "
                     f"{_fmt(v.pretraining_std)} |")
    return "\n".join(lines + [""])
