"""The study in paper units: each table and figure of the paper as rows, each row the few fields it changes from
RunConfig's defaults (which are the paper's values).

Table 1a's alpha = .75 row only sets ``loss.gamma = 0`` and ``loss.alpha = 0.75``; a scale then translates the row
into its run (:func:`workflow.study.resolve`). Table keys follow the study manifest format of the team contract
(numbers as in the paper with Python float repr, integers without ``.0``): ``alpha=0.75``, ``gamma=2``,
``scales=3,ratios=3``, ``method=OHEM,batch=128,nms=0.7``, ``depth=50,scale=600``, ``RetinaNet-101-800``,
``loss=FL*,gamma=2,beta=1``, ``init=zero``.

Pure Python, no Snakemake.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from retinanet.config import merge
from workflow.scale import StudyError

TABLES = ("1a", "1b", "1c", "1d", "1e", "2", "3", "5.1")
FIGURES = ("fig1", "fig2", "fig4", "fig5", "fig6", "fig7")
ANALYTIC_FIGURES = ("fig1", "fig5", "fig6")
"""Figures computed from the loss formulas alone (no trained model)."""

RATIOS = {1: [1.0], 3: [0.5, 1.0, 2.0]}
"""Table 1c's '#ar' column: 1 -> the square anchor only; 3 -> {1:2, 1:1, 2:1}."""


def fmt(x: float | int) -> str:
    """A number as the manifest keys and run names write it: ``2.0 -> '2'``, ``0.75 -> '0.75'``, ``1.5 -> '1.5'``."""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)



# --------------------------------------------------------------------------------------------------------------
# The study in paper units: table/figure -> rows -> run overrides of RunConfig's paper defaults.
# --------------------------------------------------------------------------------------------------------------

def focal(gamma: float, alpha: float | None) -> dict:
    """eq. 5 (gamma = 0: alpha-balanced CE, eq. 3)."""
    return {"loss": {"cls": "focal", "gamma": float(gamma), "alpha": alpha}}


def focal_star(gamma: float, beta: float, alpha: float = 0.25) -> dict:
    """FL* (appendix A, eq. 7-8); the paper used alpha = .25 in all FL* experiments (Fig. 7 caption text)."""
    return {"loss": {"cls": "focal_star", "gamma": float(gamma), "beta": float(beta), "alpha": alpha}}


def ohem(batch: int, nms: float, pos_fraction: float | None) -> dict:
    """Table 1d's OHEM baseline: plain CE (gamma 0, no alpha) on a mined minibatch of ``batch`` anchors per image
    after NMS at ``nms``; ``pos_fraction`` 0.25 is 'OHEM 1:3'."""
    loss = {"cls": "focal", "gamma": 0.0, "alpha": None, "sampling": "ohem", "ohem_batch": batch,
            "ohem_nms": float(nms), "ohem_pos_fraction": pos_fraction}
    return {"loss": loss}


def backbone(depth: int, scale: int) -> dict:
    """ResNet-``depth``-FPN at a ``scale``-pixel shorter side (paper units; the scale maps both)."""
    return {"model": {"depth": depth}, "data": {"min_size": scale}}


def anchors(num_scales: int, num_ratios: int) -> dict:
    """Table 1c: ``num_scales`` octave scales 2^(k/num_scales) and 1 or 3 aspect ratios."""
    if num_ratios not in RATIOS:
        raise StudyError(f"grids.table1c: {num_ratios} aspect ratios is not one of {sorted(RATIOS)}")
    return {"anchors": {"num_scales": num_scales, "aspect_ratios": RATIOS[num_ratios]}}


def _overrides(*parts: dict) -> dict:
    out: dict = {}
    for part in parts:
        out = merge(out, part)
    return out


DEFAULT_FL = focal(2, 0.25)
"""The paper's default loss: gamma 2, alpha .25 (section 5.1, 'Focal Loss')."""
CE_BEST = focal(0, 0.75)
"""Table 1a's best alpha-balanced CE (31.1 AP), which is Table 3's CE row."""
PAPER_SOLVER = {"solver": {"paper_solver": True}}
"""Row override: keep the paper's learning strategy (:data:`PAPER_SOLVER_FIELDS`) whatever the scale's base sets."""
CE_STANDARD = focal(0, 0.5)
"""Section 5.1's 'standard CE': alpha = .5 is unweighted CE up to a constant factor; with the prior init it is the
30.2 AP of both section 5.1 and Table 1a's alpha = .5 row, so those share one model (unless a scale changes the
learning strategy, which section 5.1's rows keep: ``PAPER_SOLVER``)."""


@dataclass(frozen=True)
class Row:
    """One row of a table (or one point of a figure): its manifest key, its run (paper-unit overrides of
    RunConfig) and extra fields copied into the manifest (e.g. ``{"alpha": 0.25}``)."""

    key: str
    overrides: dict
    fields: dict = dataclasses.field(default_factory=dict)


def table_rows(grids: dict) -> dict[str, list[Row] | list[tuple[str, list[Row]]]]:
    """Every table's rows, from the scale's ``grids`` (paper units).

    Table 1b is a list of ``(key, candidates)``: one candidate run per alpha of the grid; the analysis picks the
    best alpha per gamma, as the paper did.
    """
    t: dict[str, Any] = {}
    t["1a"] = [Row(f"alpha={fmt(a)}", focal(0, a), {"alpha": a}) for a in grids["table1a_alpha"]]
    t["1b"] = [(f"gamma={fmt(g)}", [Row(f"gamma={fmt(g)},alpha={fmt(a)}", focal(g, a), {"gamma": g, "alpha": a})
                                    for a in grids["table1b_alpha"]]) for g in grids["table1b_gamma"]]
    t["1c"] = [Row(f"scales={s},ratios={r}", anchors(s, r), {"scales": s, "ratios": r})
               for s, r in grids["table1c"]]
    deep = grids["deep_depth"]
    abl = grids["ablation_scale"]
    t["1d"] = [Row(f"method=OHEM,batch={b},nms={fmt(n)}", _overrides(backbone(deep, abl), ohem(b, n, None)),
                   {"method": "OHEM", "batch": b, "nms": n})
               for n in grids["table1d_ohem_nms"] for b in grids["table1d_batch"]]
    t["1d"] += [Row(f"method=OHEM 1:3,batch={b},nms={fmt(n)}", _overrides(backbone(deep, abl), ohem(b, n, 0.25)),
                    {"method": "OHEM 1:3", "batch": b, "nms": n})
                for n in grids["table1d_ohem13_nms"] for b in grids["table1d_batch"]]
    t["1d"].append(Row("method=FL", _overrides(backbone(deep, abl), DEFAULT_FL), {"method": "FL"}))
    t["1e"] = [Row(f"depth={d},scale={s}", _overrides(backbone(d, s), DEFAULT_FL), {"depth": d, "scale": s})
               for d in grids["table1e_depth"] for s in grids["table1e_scale"]]
    big = max(grids["table1e_scale"])
    t["2"] = [Row(f"RetinaNet-{deep}-{big}", _overrides(backbone(deep, big), DEFAULT_FL,
                                                         {"data": {"train_min_sizes": "jitter"}},
                                                         {"solver": {"schedule": grids["long_schedule"]}}),
                  {"depth": deep, "scale": big, "jitter": True, "schedule": grids["long_schedule"]})]
    t["3"] = [Row("loss=CE", CE_BEST, {"loss": "CE"}),
              Row("loss=FL,gamma=2", DEFAULT_FL, {"loss": "FL", "gamma": 2})]
    t["3"] += [Row(f"loss=FL*,gamma={fmt(g)},beta={fmt(b)}", focal_star(g, b), {"loss": "FL*", "gamma": g, "beta": b})
               for g, b in ((2, 1), (4, 0))]
    # Section 5.1 trains CE "without any modifications to the initialization or learning strategy": both rows keep
    # the paper's lr and no gradient clipping, whatever a scale's base sets (PAPER_SOLVER_FIELDS).
    t["5.1"] = [Row("init=zero", _overrides(CE_STANDARD, {"model": {"cls_bias_init": "zero"}}, PAPER_SOLVER),
                    {"init": "zero"}),
                Row("init=prior", _overrides(CE_STANDARD, PAPER_SOLVER), {"init": "prior"})]
    return t


def figure_rows(grids: dict) -> dict[str, Any]:
    """Figures that need trained models: Fig. 4 (one model) and Fig. 7 (the FL* gamma x beta grid)."""
    fig4 = Row("fig4", _overrides(backbone(grids["deep_depth"], grids["ablation_scale"]), DEFAULT_FL))
    fig7 = [Row(f"gamma={fmt(g)},beta={fmt(b)}", focal_star(g, b), {"gamma": g, "beta": b})
            for g in grids["fig7_gamma"] for b in grids["fig7_beta"]]
    return {"fig4": fig4, "fig7": fig7}


