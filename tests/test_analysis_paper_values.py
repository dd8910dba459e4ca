"""analysis/paper_values.yaml against the paper's text: literals copied from the paper, not from the file."""

from __future__ import annotations

import math

import pytest

from analysis.keys import format_number, parse_key
from analysis.paper_values import load_paper_values

PV = load_paper_values()

# (table, key, column, value as printed in the paper)
SPOT_CHECKS = [
    ("1a", "alpha=0.1", "AP", 0.0),           # Table 1a: .10 -> 0.0 AP
    ("1a", "alpha=0.75", "AP50", 49.4),       # Table 1a: .75 -> 31.1 / 49.4 / 33.0
    ("1a", "alpha=0.999", "AP75", 26.1),      # Table 1a: .999 -> 25.1 / 41.7 / 26.1
    ("1b", "gamma=0.5", "AP", 32.9),          # Table 1b: 0.5 / .50 -> 32.9
    ("1b", "gamma=5", "AP75", 34.8),          # Table 1b: 5.0 / .25 -> 32.2 / 49.6 / 34.8
    ("1c", "scales=1,ratios=1", "AP", 30.3),  # §5.2: "A surprisingly good AP (30.3) ... using just one square anchor"
    ("1c", "scales=2,ratios=3", "AP", 34.2),  # Table 1c: 2 / 3 -> 34.2
    ("1d", "method=OHEM,batch=128,nms=0.5", "AP", 32.8),  # §5.1: "best setting for OHEM ... achieves 32.8 AP"
    ("1d", "method=OHEM 1:3,batch=512,nms=0.5", "AP50", 35.5),
    ("1d", "method=FL", "AP75", 38.7),
    ("1e", "depth=101,scale=600", "time", 122),  # §5.2: "running in 122 ms per image"
    ("1e", "depth=50,scale=400", "APs", 11.2),
    ("1e", "depth=101,scale=800", "APl", 49.2),
    ("2", "RetinaNet-101-800", "AP", 39.1),    # abstract / §5.3: 39.1 AP
    ("3", "loss=FL*,gamma=4,beta=0", "AP50", 51.8),
    ("3", "loss=CE", "AP", 31.1),
    ("5.1", "init=prior", "AP", 30.2),         # §5.1: "a respectable AP of 30.2"
]


@pytest.mark.parametrize(("table", "key", "column", "value"), SPOT_CHECKS)
def test_spot_checks_against_paper_text(table, key, column, value):
    assert PV.tables[table].row(key).values[column] == pytest.approx(value, abs=1e-9)


def test_published_detectors_and_fig2_inset():
    published = {r.key: r for r in PV.tables["2"].published}
    assert published["DSSD513"].values["AP"] == 33.2  # §5.3: "5.9 point AP gap (39.1 vs. 33.2)"
    assert published["Faster R-CNN w TDM"].values["AP"] == 36.8  # §5.3: "2.3 point gap" to 39.1
    assert published["YOLOv2"].values["APs"] == 5.0
    fig2 = {p.key: p for p in PV.fig2_points}
    assert (fig2["FPN FRCN"].values["AP"], fig2["FPN FRCN"].values["time"]) == (36.2, 172)  # "172 ms"
    assert (fig2["SSD321"].values["AP"], fig2["SSD321"].values["time"]) == (28.0, 61)
    assert fig2["YOLOv2"].extra["plotted"] is False


def test_table_sizes_and_1b_alphas():
    assert {t: len(PV.tables[t].rows) for t in PV.tables} == {
        "1a": 7, "1b": 7, "1c": 7, "1d": 10, "1e": 10, "2": 1, "3": 4, "5.1": 2}
    assert [r.extra["alpha"] for r in PV.tables["1b"].rows] == [0.75, 0.75, 0.75, 0.5, 0.25, 0.25, 0.25]
    assert PV.tables["5.1"].row("init=zero").status == "diverged"
    assert PV.tables["5.1"].row("init=zero").values["AP"] is None


def test_internal_consistency_of_the_paper():
    """Rows the paper reports twice agree: 1a alpha .75 = 1b gamma 0 = Table 3 CE; 1b gamma 2 = 1c 3x3 = Table 3 FL;
    1d FL = 1e 101/600 (AP)."""
    t = PV.tables
    for col in ("AP", "AP50", "AP75"):
        assert t["1a"].row("alpha=0.75").values[col] == t["1b"].row("gamma=0").values[col] == \
            t["3"].row("loss=CE").values[col]
        assert t["1b"].row("gamma=2").values[col] == t["1c"].row("scales=3,ratios=3").values[col] == \
            t["3"].row("loss=FL,gamma=2").values[col]
    assert t["1d"].row("method=FL").values["AP"] == t["1e"].row("depth=101,scale=600").values["AP"] == 36.0


def test_every_value_has_source_and_tolerance_and_keys_follow_the_format():
    for table in PV.tables.values():
        for row in table.rows + table.published:
            assert row.source.strip()
            for col in table.columns:
                assert col in row.tolerance
                if col != "time":
                    assert row.tolerance[col] is not None and row.tolerance[col] > 0
            if table.id in ("1a", "1b", "1c", "1e", "3"):
                for name, value in parse_key(row.key).items():
                    if name not in ("loss", "method"):
                        assert value == format_number(float(value)), row.key


def test_tolerance_rule():
    row = PV.tables["1a"].row("alpha=0.75")
    assert row.within_tolerance("AP", 30.1) is True
    assert row.within_tolerance("AP", 30.0) is False
    assert row.within_tolerance("AP", math.nan) is None
    assert PV.tables["1e"].row("depth=50,scale=400").within_tolerance("time", 64.0) is None  # never judged
