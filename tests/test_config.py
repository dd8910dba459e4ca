import re

import pytest

from retinanet.config import ConfigError, RunConfig, dump, from_dict, load, merge, to_dict


def test_defaults_are_the_papers():
    cfg = RunConfig()
    assert (cfg.loss.gamma, cfg.loss.alpha, cfg.model.prior_prob) == (2.0, 0.25, 0.01)
    assert (cfg.solver.base_lr, cfg.solver.batch_size, cfg.solver.iterations) == (0.01, 16, 90000)
    assert [round(s * cfg.solver.iterations) for s in cfg.solver.steps] == [60000, 80000]
    assert (cfg.solver.momentum, cfg.solver.weight_decay, cfg.solver.warmup_iters) == (0.9, 1e-4, 500)
    assert (cfg.matcher.fg_iou, cfg.matcher.bg_iou, cfg.matcher.low_quality) == (0.5, 0.4, "detectron")
    assert (cfg.anchors.sizes, cfg.anchors.num_scales, cfg.anchors.aspect_ratios) == (
        [32.0, 64.0, 128.0, 256.0, 512.0], 3, [0.5, 1.0, 2.0])
    assert (cfg.test.score_thresh, cfg.test.topk_per_level, cfg.test.nms_thresh,
            cfg.test.detections_per_image) == (0.05, 1000, 0.5, 100)
    assert (cfg.model.fpn_channels, cfg.model.head_convs, cfg.data.min_size, cfg.data.max_size) == (256, 4, 600, 1000)


def test_round_trip_through_yaml(tmp_path):
    cfg = from_dict({"loss": {"gamma": 0.5, "alpha": None}, "model": {"depth": 101}})
    dump(cfg, tmp_path / "c.yaml")
    again = load(tmp_path / "c.yaml")
    assert to_dict(again) == to_dict(cfg)
    assert again.loss.alpha is None and again.model.depth == 101


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"loss": {"gama": 2}}, "loss.gama: unknown config key"),
        ({"modle": {}}, "modle: unknown config key"),
        ({"loss": {"gamma": "two"}}, "loss.gamma: expected a number, got 'two'"),
        ({"solver": {"iterations": 1.5}}, "solver.iterations: expected an integer"),
        ({"data": {"hflip": "yes"}}, "data.hflip: expected true/false"),
        ({"loss": {"alpha": 1.5}}, r"loss.alpha: 1.5 is outside \[0.0, 1.0\]"),
        ({"model": {"depth": 42}}, "model.depth: 42 is not one of"),
        ({"matcher": {"low_quality": "all"}}, "matcher.low_quality: 'all' is not one of"),
        ({"anchors": {"sizes": [32, 64]}}, "anchors.sizes: need one size per level"),
        ({"matcher": {"fg_iou": 0.3}}, "matcher.bg_iou: must not exceed"),
        ({"solver": {"steps": [0.9, 0.5]}}, "solver.steps: must be increasing"),
        ({"loss": {"cls": "focal_star", "gamma": 0}}, "loss.gamma: FL\\* needs gamma > 0"),
        ({"loss": 3}, "loss: expected a mapping"),
        ({"model": {"pretrained": "none"}}, "model.norm: frozen_bn with model.pretrained none"),
        ({"model": {"pretrained": "none", "norm": "bn"}}, "model.freeze_at: 2 with model.pretrained none"),
    ],
)
def test_bad_values_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(data)


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("loss:\n  gamma: -1\n")
    with pytest.raises(ConfigError, match=f"{path}: loss.gamma"):
        load(path)
    path.write_text("loss: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(tmp_path / "absent.yaml")


def test_config_file_not_utf8_names_file_and_position(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes("loss:\n  gamma: 2.0  # café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: config file is not UTF-8 \(byte 0xe9 on line 2, "
                                          r"offset 25\)$"):
        load(path)


@pytest.mark.parametrize("text", ["", "# every field at the paper's value\n", "null\n", "---\n"])
def test_empty_config_file_is_refused(tmp_path, text):
    """An empty file would otherwise be the whole paper config: a 90k-iteration ResNet-50 run."""
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: empty config file .*'seed: 0'"):
        load(path)
    for explicit in ("seed: 0\n", "{}\n"):  # the paper config, asked for on purpose
        path.write_text(explicit)
        assert to_dict(load(path)) == to_dict(RunConfig())


@pytest.mark.parametrize(("text", "got"), [("- loss\n- model\n", "list"), ("3\n", "int"), ("focal\n", "str")])
def test_config_top_level_must_be_a_mapping(tmp_path, text, got):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: <root>: expected a mapping of fields, got {got}"):
        load(path)


def test_merge_is_recursive_and_lists_replace():
    base = {"loss": {"gamma": 2.0, "alpha": 0.25}, "anchors": {"aspect_ratios": [0.5, 1.0, 2.0]}}
    out = merge(base, {"loss": {"gamma": 0.0}, "anchors": {"aspect_ratios": [1.0]}})
    assert out == {"loss": {"gamma": 0.0, "alpha": 0.25}, "anchors": {"aspect_ratios": [1.0]}}
    assert base["loss"]["gamma"] == 2.0
