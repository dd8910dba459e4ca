"""The regime experiment (issue 18, this study's addition): its runs at every rate, their configs, seeds and
snapshots, and that each config's measured rate (the prior arm's pi) is what anchor-stats measures on its data."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from retinanet.synthetic.generator import DatasetSpec, make_dataset
from retinanet.tools.anchor_stats import anchor_statistics
from workflow.regime import ARMS, build_regime, dataset_options, rate_tag, regime_paths
from workflow.scale import StudyError, load_scale
from workflow.study import build_study

ROOT = Path(__file__).resolve().parents[1]


def _scale(name: str) -> dict:
    return load_scale({"scale": name}, ROOT / "config")


def test_mini_spans_mini_to_cocos_regime_with_three_arms_and_enough_seeds():
    scale = _scale("mini")
    regime = build_regime(scale)
    rates = regime.manifest["rates"]
    targets = [r["rate"] for r in rates]
    assert len(rates) >= 4 and targets == sorted(targets, reverse=True)  # mildest first
    assert targets[0] >= 9e-4 and targets[-1] <= 3e-5
    assert [r["end"] for r in rates] == [True] + [False] * (len(rates) - 2) + [True]
    for r in rates:
        assert set(r["arms"]) == {"fl", "ce", "ce-prior"}
        for arm in r["arms"].values():
            assert len(arm["seeds"]) == (3 if r["end"] else 2)
            assert bool(arm["curve"]) == r["end"]  # AP-against-iteration curves at the two ends only
    assert len(regime.runs) == 3 * sum(3 if r["end"] else 2 for r in rates) == 30
    assert not set(regime.runs) & set(build_study(scale).runs)  # never part of the paper's tables


def test_each_arm_is_the_loss_and_prior_it_names_on_its_variant():
    regime = build_regime(_scale("mini"))
    for v in regime.variants:
        fl, ce, prior = (regime.runs[f"regime-{v.tag}-{key}-s0"] for key in ("fl", "ce", "ce-prior"))
        assert (fl.loss.cls, fl.loss.gamma, fl.loss.alpha, fl.model.prior_prob) == ("focal", 2.0, 0.25, 0.01)
        assert (ce.loss.gamma, ce.loss.alpha, ce.model.prior_prob) == (0.0, 0.75, 0.01)
        assert (prior.loss.gamma, prior.loss.alpha, prior.model.prior_prob) == (0.0, 0.75, v.measured)
        for cfg in (fl, ce, prior):
            assert cfg.model.num_classes == v.args["classes"] and cfg.data.root == v.root
            assert cfg.data.min_size == v.args["size"] == 128 and cfg.model.depth == 18
            assert cfg.solver.iterations == 1000 and cfg.model.cls_bias_init == "prior"
        # the three arms differ only in the loss and the prior
        a, b = copy.deepcopy(fl), copy.deepcopy(prior)
        b.loss, b.model.prior_prob = a.loss, a.model.prior_prob
        assert a == b
    ends = {regime.variants[0].tag, regime.variants[-1].tag}
    assert {rid for rid, cfg in regime.runs.items() if cfg.solver.snapshot_period} == \
        {rid for rid in regime.runs if any(rid.startswith(f"regime-{tag}-") for tag in ends)}


def test_a_scale_without_regime_has_none_and_bad_sections_name_the_field():
    assert build_regime(_scale("paper")).runs == {}
    scale = _scale("smoke")
    twice = copy.deepcopy(scale)
    twice["regime"]["datasets"][1]["rate"] = twice["regime"]["datasets"][0]["rate"]
    with pytest.raises(StudyError, match=r"regime.datasets: need >= 2 distinct rates, got \['pr1e-04', 'pr1e-04'\]"):
        build_regime(twice)
    no_val = copy.deepcopy(scale)
    del no_val["regime"]["datasets"][0]["args"]["val"]
    with pytest.raises(StudyError, match=r"regime.datasets\[0\]: args need 'train' and 'val'"):
        build_regime(no_val)
    bad = copy.deepcopy(scale)
    bad["regime"]["datasets"][0]["measured"] = 0.0
    with pytest.raises(StudyError, match=r"regime.datasets\[0\]: .*measured 0.0 must lie in \(0, 1\)"):
        build_regime(bad)


def test_dataset_options_and_tags():
    assert dataset_options({"train": 8, "objects": [1, 2], "min_small_side": 0.65}) == \
        "--train 8 --objects 1 2 --min-small-side 0.65"
    assert rate_tag(3e-5) == "pr3e-05" and rate_tag(1.0e-3) == "pr1e-03"
    assert regime_paths(_scale("mini"))["section"] == "results/mini/regime.md"
    assert [a.key for a in ARMS] == ["fl", "ce", "ce-prior"]


@pytest.mark.parametrize(("scale_name", "images"), [("smoke", None), ("mini", 300)])
def test_measured_rates_in_the_configs_are_what_anchor_stats_measures(tmp_path, scale_name, images):
    """The prior arm's pi (`measured`) against anchor-stats --train on the variant's data, as the config's comment
    says it was measured; mini on the first 300 training images (image i depends only on the seed and i), within
    10% (3 standard errors of that sample), smoke on all of them, within 1%."""
    scale = _scale(scale_name)
    regime = build_regime(scale)
    for v in regime.variants:
        args = dict(v.args)
        spec = DatasetSpec(image_size=args.get("size", 128), zoom=args.get("zoom", 1.0),
                           min_small_side=args.get("min_small_side", DatasetSpec.min_small_side),
                           num_classes=args.get("classes", 6),
                           min_objects=args.get("objects", [1, 6])[0], max_objects=args.get("objects", [1, 6])[1])
        root = tmp_path / v.tag
        make_dataset(root, seed=scale["dataset"]["seed"], splits={"train": images or args["train"]}, spec=spec)
        cfg = copy.deepcopy(regime.runs[f"regime-{v.tag}-fl-s0"])
        cfg.data.root = str(root)
        rate = anchor_statistics(cfg, train_split=True)["positive_rate"]["per_output"]["mean_over_images"]
        assert rate == pytest.approx(v.measured, rel=0.1 if images else 0.01), v.tag
