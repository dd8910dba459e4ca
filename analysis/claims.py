"""The paper's claims C1-C9, each judged on our runs by the rule of :mod:`analysis.verdict`.

Each claim is split into tests (contrasts between settings); ``evaluate_claims`` returns, per claim, the paper's
evidence, ours (numbers with seeds) and the verdict. Settings come from the study's tables by their row keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from analysis.fig4_summary import Fig4Data, load_fig4
from analysis.keys import parse_key
from analysis.seeds import SeedValues, seed_values
from analysis.study_io import Study, load_table, load_table_1b
from analysis.tables import best_alpha
from analysis.verdict import (
    Comparison,
    compare,
    holds_equal,
    holds_greater,
    holds_not_greater,
    slower,
    verdict,
)

COLLAPSE_FRACTION = 0.1
"""C2: alpha = .10 'collapses' when its mean AP is at most this fraction of the best alpha's (paper: 0.0 vs 31.1)."""
C8_MIN_FACTOR = 2.0
"""C8: the fraction of the hardest negatives carrying half of their loss must shrink by at least this factor from
gamma 0 to gamma 2 ..."""
C8_RATIO = 2.0
"""... and its shrink factor must be at least this many times the positives' (the positives 'change little')."""


@dataclass
class Evidence:
    """Our results: ``tables[id][key][seed] = metrics``; Table 1b by gamma key and alpha; Fig. 4's samples (or an
    exported study's summary of them)."""

    tables: dict[str, dict[str, dict[str, dict]]]
    table_1b: dict[str, dict[float, dict[str, dict]]] = field(default_factory=dict)
    samples: Fig4Data | None = None

    def values(self, table: str, key: str, column: str = "AP") -> SeedValues | None:
        by_seed = self.tables.get(table, {}).get(key)
        return seed_values(by_seed, column) if by_seed else None

    def fl_1b(self, gamma_key: str) -> tuple[float | None, SeedValues | None]:
        """Table 1b: (winning alpha, its AP) for one gamma."""
        cands = {a: seed_values(m, "AP") for a, m in self.table_1b.get(gamma_key, {}).items()}
        won = best_alpha(cands)
        return won, (cands[won] if won is not None else None)


def load_evidence(study: Study) -> Evidence:
    """Load every table of the study and Figure 4's samples (when the manifest lists them)."""
    tables = {tid: load_table(study, tid) for tid in ("1a", "1c", "1d", "1e", "3", "5.1")}
    return Evidence(tables=tables, table_1b=load_table_1b(study), samples=load_fig4(study))


@dataclass(frozen=True)
class ClaimResult:
    id: str
    claim: str
    paper: str
    ours: str
    tests: list[tuple[str, bool | None]]

    @property
    def verdict(self) -> str:
        return verdict([t for _, t in self.tests])


def _fmt(v: SeedValues | None) -> str:
    return "not run" if v is None else v.format(1) + (f" ({v.n_diverged}/{v.n} diverged)" if v.n_diverged else "")


def _cmp(a: SeedValues | None, b: SeedValues | None) -> Comparison:
    return compare(a.values if a else [], b.values if b else [])


def _contrast(name_a: str, a: SeedValues | None, name_b: str, b: SeedValues | None,
              test: Callable[[Comparison], bool | None], claim: str) -> tuple[str, tuple[str, bool | None]]:
    """One contrast: (ours text, (test description, outcome))."""
    c = _cmp(a, b)
    if a is None or b is None:
        return f"{name_a} vs {name_b}: not run", (claim, None)
    text = (f"{name_a} {_fmt(a)} vs {name_b} {_fmt(b)}: Δ {c.diff:+.1f}, threshold {c.threshold:.1f} → "
            f"{c.outcome.value}")
    return text, (claim, test(c))


def _best(ev: Evidence, table: str, prefix: str) -> tuple[str | None, SeedValues | None]:
    """The key of ``table`` starting with ``prefix`` with the best mean AP."""
    scored = [(k, ev.values(table, k)) for k in ev.tables.get(table, {}) if k.startswith(prefix)]
    scored = [(k, v) for k, v in scored if v is not None and math.isfinite(v.mean)]
    if not scored:
        return None, None
    return max(scored, key=lambda kv: kv[1].mean)


def c1(ev: Evidence) -> ClaimResult:
    zero, prior = ev.values("5.1", "init=zero"), ev.values("5.1", "init=prior")
    tests: list[tuple[str, bool | None]] = []
    ours = []
    if zero is None:
        tests.append(("CE with the plain (zero-bias) init diverges", None))
    else:
        all_div, none_div = zero.n_diverged == zero.n, zero.n_diverged == 0
        tests.append(("CE with the plain (zero-bias) init diverges in every seed",
                      True if all_div else (False if none_div else None)))
        ours.append(f"plain init: {zero.n_diverged}/{zero.n} seeds diverged, AP {_fmt(zero)}")
    if prior is not None:
        tests.append(("CE with the prior init trains in every seed", prior.n_diverged == 0))
    text, test = _contrast("prior init", prior, "plain init", zero, holds_greater, "prior init beats plain init")
    tests.append(test)
    ours.append(text)
    return ClaimResult("C1", "CE without the prior init diverges; with π = .01 it trains.",
                       "§5.1: standard CE 'fails quickly, with the network diverging'; with π = .01 ResNet-50 "
                       "reaches 30.2 AP.", "; ".join(ours), tests)


def _alpha_rows(ev: Evidence) -> dict[float, SeedValues]:
    out = {}
    for key in ev.tables.get("1a", {}):
        v = ev.values("1a", key)
        if v is not None:
            out[float(parse_key(key)["alpha"])] = v
    return out


def c2(ev: Evidence) -> ClaimResult:
    rows = _alpha_rows(ev)
    tests: list[tuple[str, bool | None]] = []
    ours = []
    best = best_alpha(rows)
    if best is None:
        tests.append(("Table 1a was run", None))
    else:
        ours.append(f"best α = {best:g} ({_fmt(rows[best])})")
        tests.append(("the best α (mean AP) is high (≥ .75)", best >= 0.75))
        if 0.75 in rows:
            for a, v in sorted(rows.items()):
                if a < 0.75:
                    _, test = _contrast(f"α={a:g}", v, "α=.75", rows[0.75], holds_not_greater,
                                        f"the lower α={a:g} does not beat α=.75")
                    tests.append(test)
        text, test = _contrast(f"best α={best:g}", rows[best], "α=.10", rows.get(0.1), holds_greater,
                               "the best α beats α=.10")
        ours.append(text)
        tests.append(test)
        if 0.1 in rows:
            ratio_ok = rows[0.1].mean <= COLLAPSE_FRACTION * rows[best].mean
            tests.append((f"α=.10 collapses (mean AP ≤ {COLLAPSE_FRACTION:g} × the best α's)", ratio_ok))
            ours.append(f"α=.10: {_fmt(rows[0.1])}")
    return ClaimResult("C2", "α-balanced CE is best at a high α (.75) and collapses at α = .10.",
                       "Table 1a: α=.75 31.1 AP (best), .90 30.8, .50 30.2, .25 10.8, .10 0.0.",
                       "; ".join(ours), tests)


def _fl_gamma2(ev: Evidence) -> tuple[str, SeedValues | None]:
    alpha, v = ev.fl_1b("gamma=2")
    if v is not None:
        return f"FL γ=2 (best α {alpha:g}, Table 1b)", v
    return "FL γ=2 (Table 3)", ev.values("3", "loss=FL,gamma=2")


def c3(ev: Evidence) -> ClaimResult:
    rows = _alpha_rows(ev)
    best = best_alpha(rows)
    name_fl, fl = _fl_gamma2(ev)
    text, test = _contrast(name_fl, fl, f"best α-CE (α={best:g})" if best is not None else "best α-CE",
                           rows.get(best) if best is not None else None, holds_greater, "FL γ=2 beats the best α-CE")
    return ClaimResult("C3", "FL with γ = 2 beats the best α-balanced CE.",
                       "Tables 1a/1b: FL γ=2 α=.25 34.0 AP vs α-CE α=.75 31.1 AP (+2.9).", text, [test])


def c4(ev: Evidence) -> ClaimResult:
    rows = _alpha_rows(ev)
    best = best_alpha(rows)
    ce = rows.get(best) if best is not None else None
    tests: list[tuple[str, bool | None]] = []
    ours = []
    winners = []
    for key in ev.table_1b:
        gamma = float(parse_key(key)["gamma"])
        alpha, v = ev.fl_1b(key)
        if alpha is None:
            continue
        winners.append((gamma, alpha))
        if 0.5 <= gamma <= 5.0:
            text, test = _contrast("best α-CE", ce, f"FL γ={gamma:g} (α={alpha:g})", v, holds_not_greater,
                                   f"FL γ={gamma:g} is not beaten by the best α-CE")
            ours.append(text)
            tests.append(test)
    winners.sort()
    if len(winners) >= 2:
        alphas = [a for _, a in winners]
        monotone = all(b <= a for a, b in zip(alphas, alphas[1:]))
        lower = alphas[-1] < alphas[0]
        tests.append(("the best α falls as γ rises (non-increasing, lower at the largest γ)",
                      True if monotone and lower else (False if not lower else None)))
        ours.append("best α per γ: " + ", ".join(f"γ={g:g}: {a:g}" for g, a in winners))
    else:
        tests.append(("Table 1b was run", None))
    return ClaimResult("C4", "FL is robust over γ ∈ [.5, 5], and the best α falls as γ rises.",
                       "Table 1b: γ=.5..5 give 32.2-34.0 AP (α-CE: 31.1); best α .75, .75, .75, .5, .25, .25, .25 "
                       "for γ = 0, .1, .2, .5, 1, 2, 5.", "; ".join(ours), tests)


def c5(ev: Evidence) -> ClaimResult:
    one, nine = ev.values("1c", "scales=1,ratios=1"), ev.values("1c", "scales=3,ratios=3")
    text1, test1 = _contrast("3×3 anchors", nine, "1 anchor", one, holds_greater, "3 scales × 3 ratios beat 1 anchor")
    sat = [(k, ev.values("1c", k)) for k in ("scales=2,ratios=3", "scales=3,ratios=3")]
    sat = [(k, v) for k, v in sat if v is not None]
    best69 = max(sat, key=lambda kv: kv[1].mean) if sat else (None, None)
    text2, test2 = _contrast("12 anchors (4×3)", ev.values("1c", "scales=4,ratios=3"),
                             f"best of 6-9 anchors ({best69[0]})", best69[1], holds_not_greater,
                             "12 anchors do not beat the best of 6-9 anchors")
    return ClaimResult("C5", "3 scales × 3 ratios beat one anchor, and gains saturate past 6-9 anchors.",
                       "Table 1c: 1 anchor 30.3 AP, 3×3 34.0, 2×3 34.2, 4×3 33.8.", f"{text1}; {text2}",
                       [test1, test2])


def c6(ev: Evidence) -> ClaimResult:
    key, ohem = _best(ev, "1d", "method=OHEM")
    text, test = _contrast("FL", ev.values("1d", "method=FL"), f"best OHEM ({key})", ohem, holds_greater,
                           "FL beats the best OHEM variant")
    return ClaimResult("C6", "FL beats the best OHEM variant.",
                       "Table 1d (ResNet-101): FL 36.0 AP vs best OHEM (batch 128, nms .5) 32.8 AP (+3.2).",
                       text, [test])


def c7(ev: Evidence) -> ClaimResult:
    fl = ev.values("3", "loss=FL,gamma=2")
    tests, ours = [], []
    for key in ev.tables.get("3", {}):
        if key.startswith("loss=FL*"):
            text, test = _contrast(key.removeprefix("loss="), ev.values("3", key), "FL γ=2", fl, holds_equal,
                                   f"{key.removeprefix('loss=')} is about as good as FL")
            ours.append(text)
            tests.append(test)
    if not tests:
        tests.append(("Table 3's FL* rows were run", None))
    return ClaimResult("C7", "FL* performs about as well as FL.",
                       "Table 3: FL γ=2 34.0 AP; FL* γ=2 β=1 33.8; FL* γ=4 β=0 33.9.", "; ".join(ours), tests)


def _join(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def c8(ev: Evidence) -> ClaimResult:
    claim = "As γ rises, the negatives' loss concentrates on the hardest negatives; the positives' CDF changes little."
    paper = ("Fig. 4 (ResNet-101, 600 px, γ=2 model, ~10^5 positive and ~10^7 negative samples): the positive CDFs "
             "are similar for all γ (~20% of the hardest positives carry ~half of the loss); for negatives with "
             "γ=2 the vast majority of the loss comes from a small fraction of samples.")
    if ev.samples is None:
        return ClaimResult("C8", claim, paper, "no loss samples", [("Figure 4's samples were collected", None)])
    from analysis.fig4_data import FIG4_GAMMAS, HARDEST_FRACTION

    half, shares = ev.samples.half_loss_fractions(), ev.samples.hardest_shares()
    neg = [half["neg"][g] for g in FIG4_GAMMAS]
    pos = [half["pos"][g] for g in FIG4_GAMMAS]
    pct = int(round(HARDEST_FRACTION * 100))
    gam = ", ".join(f"{g:g}" for g in FIG4_GAMMAS)
    ours = (f"fraction of the hardest samples carrying half of the loss (γ = {gam}): negatives "
            f"{', '.join(f'{f:.2%}' for f in neg)}; positives {', '.join(f'{f:.2%}' for f in pos)}. Share of the "
            f"loss in the hardest {pct}%: negatives {_join(shares['neg'].values())}; "
            f"positives {_join(shares['pos'].values())} ({ev.samples.describe()})")
    neg_factor, pos_factor = neg[0] / neg[-1], pos[0] / pos[-1]
    tests = [
        ("the negatives' half-loss fraction does not grow as γ rises", all(b <= a + 1e-12 for a, b in
                                                                         zip(neg, neg[1:]))),
        (f"it shrinks by a factor ≥ {C8_MIN_FACTOR:g} from γ=0 to γ=2 (ours: {neg_factor:.1f}×)",
         neg_factor >= C8_MIN_FACTOR),
        (f"the negatives' factor is ≥ {C8_RATIO:g}× the positives' ({pos_factor:.1f}×)",
         neg_factor >= C8_RATIO * pos_factor),
    ]
    return ClaimResult("C8", claim, paper, ours, tests)


def c9(ev: Evidence) -> ClaimResult:
    table = ev.tables.get("1e", {})
    by = {(int(parse_key(k)["depth"]), int(parse_key(k)["scale"])): k for k in table}
    tests, ours = [], []
    depths = sorted({d for d, _ in by})
    scales = sorted({s for _, s in by})
    if len(depths) >= 2:
        lo_d, hi_d = depths[0], depths[-1]
        for s in scales:
            if (lo_d, s) in by and (hi_d, s) in by:
                a, b = by[(hi_d, s)], by[(lo_d, s)]
                text, test = _contrast(f"R{hi_d}@{s}", ev.values("1e", a), f"R{lo_d}@{s}", ev.values("1e", b),
                                       holds_greater, f"ResNet-{hi_d} beats ResNet-{lo_d} at {s}")
                ours.append(text)
                tests.append(test)
                ta, tb = ev.values("1e", a, "time"), ev.values("1e", b, "time")
                tests.append((f"ResNet-{hi_d} is slower than ResNet-{lo_d} at {s}",
                              slower(ta.finite, tb.finite) if ta and tb else None))
    for d in depths:
        ss = [s for s in scales if (d, s) in by]
        if len(ss) >= 2:
            a, b = by[(d, ss[-1])], by[(d, ss[0])]
            text, test = _contrast(f"R{d}@{ss[-1]}", ev.values("1e", a), f"R{d}@{ss[0]}", ev.values("1e", b),
                                   holds_greater, f"ResNet-{d}: scale {ss[-1]} beats {ss[0]}")
            ours.append(text)
            tests.append(test)
            ta, tb = ev.values("1e", a, "time"), ev.values("1e", b, "time")
            tests.append((f"ResNet-{d}: scale {ss[-1]} is slower than {ss[0]}",
                          slower(ta.finite, tb.finite) if ta and tb else None))
    times = [f"{k}: {ev.values('1e', k, 'time').format(0)} ms" for k in table if ev.values("1e", k, "time")]
    if times:
        ours.append("times " + ", ".join(times))
    if not tests:
        tests.append(("Table 1e was run", None))
    return ClaimResult("C9", "Deeper and larger-scale models are more accurate and slower.",
                       "Table 1e: ResNet-101 beats ResNet-50 at every scale (e.g. 36.0 vs 34.3 AP at 600) and is "
                       "slower (122 vs 98 ms); 400 → 800 px: 30.5 → 35.7 AP (R50), 64 → 153 ms.",
                       "; ".join(ours), tests)


CLAIMS = (c1, c2, c3, c4, c5, c6, c7, c8, c9)


def evaluate_claims(ev: Evidence) -> list[ClaimResult]:
    """Judge C1-C9 on ``ev``."""
    return [c(ev) for c in CLAIMS]
