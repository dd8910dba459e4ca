"""The regime experiment's table, figures and report section (analysis/regime.py) on a fake finished experiment."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path

import pytest

from analysis import regime
from analysis.errors import AnalysisInputError
from analysis.seeds import seed_values

# rate tag -> (measured rate, K, {arm: AP per seed}); the mildest and the most extreme have curves
FAKE = {
    "pr1e-03": (9.2e-4, 6, {"fl": [30.0, 31.0, 32.0], "ce": [42.0, 42.5, 41.5], "ce-prior": [40.0, 41.0, 39.0]}),
    "pr1e-04": (1.0e-4, 54, {"fl": [20.0, 22.0], "ce": [18.0, 20.0], "ce-prior": [21.0, 21.0]}),
    "pr3e-05": (3.3e-5, 80, {"fl": [15.0, 16.0, 17.0], "ce": [5.0, 6.0, 7.0], "ce-prior": [10.0, 11.0, 12.0]}),
}
LABELS = {"fl": "FL (γ 2, α .25)", "ce": "α-CE (α .75), π .01", "ce-prior": "α-CE (α .75), π = rate"}


def _json(path: Path, data: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def write_fake_regime(root: Path) -> Path:
    rates = []
    for tag, (measured, k, aps) in FAKE.items():
        end = tag != "pr1e-04"
        stats = {"images": 100, "annotation_file": f"{tag}/instances_train.json", "split": "train", "num_classes": k,
                 "anchors_per_image": 3069.0, "foreground_per_image": measured * 3069 * k, "objects_per_image": 3.0,
                 "positive_rate": {"per_output": {"mean_over_images": measured, "pooled": measured, "images": 100}}}
        arms = {}
        for arm, values in aps.items():
            metrics = {str(s): _json(root / "eval" / f"{tag}-{arm}-s{s}" / "metrics.json",
                                     {"AP": ap, "status": "completed"}) for s, ap in enumerate(values)}
            curve = {}
            if end:  # AP rises to the final value: 250 -> half, 500 -> final
                for s, ap in enumerate(values):
                    curve[str(s)] = {"250": _json(root / "eval" / f"{tag}-{arm}-s{s}" / "iter_250" / "metrics.json",
                                                  {"AP": ap / 2, "status": "completed", "iteration": 250}),
                                     "500": metrics[str(s)]}
            arms[arm] = {"label": LABELS[arm], "run": f"regime-{tag}-{arm}", "seeds": list(range(len(values))),
                         "prior": measured if arm == "ce-prior" else 0.01, "metrics": metrics, "curve": curve}
        rates.append({"tag": tag, "rate": float(tag[2:]), "measured": measured * 1.02, "num_classes": k,
                      "image_size": 128, "dataset": tag, "args": {}, "end": end,
                      "anchor_stats": _json(root / "anchor-stats" / f"{tag}.json", stats), "arms": arms})
    return Path(_json(root / "regime.json", {"scale": "mini", "ce_arms": ["ce", "ce-prior"], "iterations": 500,
                                             "rates": rates}))


def test_results_pick_the_best_ce_and_the_difference_with_its_standard_error(tmp_path):
    results = regime.load_results(write_fake_regime(tmp_path))
    assert [r.tag for r in results] == ["pr1e-03", "pr1e-04", "pr3e-05"]  # mildest first
    mild, middle, extreme = results
    assert mild.best_ce == "ce" and middle.best_ce == "ce-prior" and extreme.best_ce == "ce-prior"
    assert mild.delta == pytest.approx(31.0 - 42.0)
    assert mild.delta_se == pytest.approx(math.sqrt(1.0 / 3 + 0.25 / 3))
    assert middle.delta == pytest.approx(0.0) and extreme.delta == pytest.approx(16.0 - 11.0)
    assert mild.ratio == pytest.approx(31.0 / 42.0) and extreme.ratio == pytest.approx(16.0 / 11.0)
    zero = seed_values({"0": {"AP": 0.0}, "1": {"AP": 0.0}}, "AP")  # every CE arm at 0 AP: no ratio
    assert math.isnan(dataclasses.replace(mild, ap={**mild.ap, "ce": zero, "ce-prior": zero}).ratio)
    assert extreme.curves["fl"][250].values == (7.5, 8.0, 8.5) and extreme.curves["fl"][500].mean == 16.0
    assert middle.curves == {"fl": {}, "ce": {}, "ce-prior": {}}


def test_table_has_one_row_per_rate_beside_cocos_rate(tmp_path):
    out = tmp_path / "out"
    path = write_fake_regime(tmp_path)
    assert regime.main(["table", "--regime", str(path), "--out", str(out / "t.csv"), str(out / "t.md")]) == 0
    md = (out / "t.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(FAKE)
    assert rows[1].startswith("| 9.2e-04 (pooled 9.2e-04), 92x COCO's ~1.0e-05; target 1e-03 | 6 | 3.00 | ")
    assert "**42.0 ± 0.5** (s0 42.0, s1 42.5, s2 41.5)" in rows[1] and rows[1].endswith(
        "| -11.0 ± 0.6 (vs α-CE (α .75), π .01) |")
    assert rows[3].endswith("| +5.0 ± 0.8 (vs α-CE (α .75), π = rate) |")
    assert "within 2% of the table's" in md
    table = list(csv.DictReader(io.StringIO((out / "t.csv").read_text())))
    assert len(table) == 3 * len(FAKE)
    assert {(r["rate_tag"], r["arm"]) for r in table if r["best_ce"] == "True"} == \
        {("pr1e-03", "ce"), ("pr1e-04", "ce-prior"), ("pr3e-05", "ce-prior")}
    assert {r["rate_tag"]: r["fl_vs_best_ce"] for r in table} == {
        "pr1e-03": "less", "pr1e-04": "equal within seed noise", "pr3e-05": "greater"}


def test_figures_and_the_report_section(tmp_path):
    path = write_fake_regime(tmp_path)
    figs = tmp_path / "results" / "figures"
    for what, name in (("figure", "fig_imbalance"), ("curves", "fig_imbalance_curves")):
        assert regime.main([what, "--regime", str(path), "--out", str(figs / f"{name}.png"),
                            str(figs / f"{name}.pdf")]) == 0
        assert (figs / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    table = tmp_path / "results" / "tables" / "table_imbalance.md"
    assert regime.main(["table", "--regime", str(path), "--out", str(table)]) == 0
    section = tmp_path / "results" / "regime.md"
    assert regime.main(["section", "--regime", str(path), "--out", str(section), "--table", str(table),
                        "--figure", str(figs / "fig_imbalance.png"),
                        "--curves", str(figs / "fig_imbalance_curves.png")]) == 0
    text = section.read_text()
    assert text.startswith("## This study's addition (not in the paper): FL against CE across the imbalance")
    assert "![fig_imbalance](figures/fig_imbalance.png)" in text
    assert "![fig_imbalance_curves](figures/fig_imbalance_curves.png)" in text
    assert "-11.0 ± 0.6 AP at 9.2e-04 (CE ahead)" in text and "+5.0 ± 0.8 AP at 3.3e-05 (FL ahead)" in text
    assert "+0.0 ± 1.0 AP at 1.0e-04 (equal within seed noise)" in text
    assert "grows by 16.0 AP in FL's favour" in text and "It crosses zero near 1.0e-04" in text
    assert "AP(FL) / AP(best CE), mildest first: 0.74, 1.00, 1.45:" in text  # 31/42, 21/21, 16/11


def test_the_crossing_is_interpolated_in_log_rate(tmp_path):
    results = regime.load_results(write_fake_regime(tmp_path))
    assert regime.crossing(results) == pytest.approx(1.0e-4)  # the middle rate's difference is 0
    mild, _, extreme = results
    # -11 at 9.2e-4, +5 at 3.3e-5: zero at 11/16 of the way in log10(rate)
    expected = 10 ** (math.log10(9.2e-4) + 11 / 16 * (math.log10(3.3e-5) - math.log10(9.2e-4)))
    assert regime.crossing([mild, extreme]) == pytest.approx(expected)
    assert regime.crossing([mild, mild]) is None
    assert regime.outcome(extreme).outcome.value == "greater"


def test_a_missing_metrics_file_is_named(tmp_path, capsys):
    path = write_fake_regime(tmp_path)
    (tmp_path / "eval" / "pr1e-04-ce-s1" / "metrics.json").unlink()
    with pytest.raises(AnalysisInputError, match=r"pr1e-04-ce-s1/metrics.json: metrics file not found"):
        regime.load_results(path)
    assert regime.main(["table", "--regime", str(path), "--out", str(tmp_path / "t.md")]) == 2
    assert "metrics file not found" in capsys.readouterr().err
