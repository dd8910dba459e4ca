"""CLI: subcommands and help; bad input -> one line `error: ...`, exit code 2, no output that looks complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny_coco import tiny_config, write_coco

from retinanet.__main__ import main
from retinanet.config import ConfigError, dump, to_dict
from retinanet.config_parsing import parse_overrides


def _error(capsys, argv: list[str]) -> str:
    """Run the CLI expecting exit 2; return the error line (the last line of stderr, after progress output)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: "), err
    return err


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    write_coco(tmp_path / "data", num_images=2)
    path = tmp_path / "run.yaml"
    dump(tiny_config(tmp_path / "data", {"solver": {"iterations": 1}}), path)
    return path


def _no_complete_output(run: Path) -> bool:
    return not (run / "result.json").exists() and not (run / "model_final.pt").exists()


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "time", "loss-samples"):
        assert command in out
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0 and "--out" in capsys.readouterr().out


def test_unknown_config_key(capsys, config_file, tmp_path):
    data = yaml.safe_load(config_file.read_text())
    data["model"]["dept"] = 50
    config_file.write_text(yaml.safe_dump(data))
    err = _error(capsys, ["train", "--config", str(config_file), "--out", str(tmp_path / "run")])
    assert f"{config_file}: model.dept: unknown config key" in err
    assert _no_complete_output(tmp_path / "run")


@pytest.mark.parametrize(("override", "message"), [
    ("solver.iterations=abc", "solver.iterations: expected an integer, got 'abc'"),
    ("loss.gamma=-1", "loss.gamma: -1.0 is outside"),
    ("solver.iterations", "--set 'solver.iterations': expected key=value"),
])
def test_bad_override(capsys, config_file, tmp_path, override, message):
    err = _error(capsys, ["train", "--config", str(config_file), "--out", str(tmp_path / "run"), "--set", override])
    assert message in err


def test_missing_dataset_root(capsys, config_file, tmp_path):
    err = _error(capsys, ["train", "--config", str(config_file), "--out", str(tmp_path / "run"),
                          "--set", f"data.root={tmp_path / 'nowhere'}"])
    assert err == f"error: data.root: dataset root {tmp_path / 'nowhere'} does not exist"
    assert _no_complete_output(tmp_path / "run")


def test_class_count_must_match_the_dataset(capsys, config_file, tmp_path):
    err = _error(capsys, ["train", "--config", str(config_file), "--out", str(tmp_path / "run"),
                          "--set", "model.num_classes=80"])
    assert err == f"error: model.num_classes: 80, but {tmp_path / 'data/annotations/instances.json'} has 2 categories"


def test_bad_annotation_file(capsys, config_file, tmp_path):
    ann = tmp_path / "data" / "annotations" / "instances.json"
    data = json.loads(ann.read_text())
    data["annotations"][1]["category_id"] = 5
    ann.write_text(json.dumps(data))
    err = _error(capsys, ["train", "--config", str(config_file), "--out", str(tmp_path / "run")])
    assert err.startswith(f"error: {ann}: annotations[1].category_id: 5 is not in categories")
    ann.write_text("{broken")
    err = _error(capsys, ["train", "--config", str(config_file), "--out", str(tmp_path / "run")])
    assert err.startswith(f"error: {ann}: malformed JSON at line 1")
    assert _no_complete_output(tmp_path / "run")


def test_inputs_found_by_trying_them_name_their_file(capsys, config_file, tmp_path):
    """Issue 16: a Latin-1 annotation file, a training split without boxes and an empty config file."""
    run = tmp_path / "run"
    ann = tmp_path / "data" / "annotations" / "instances.json"
    data = json.loads(ann.read_text())
    ann.write_bytes(json.dumps({**data, "info": {"contributor": "Ren\u00e9"}}).replace("\\u00e9", "\u00e9")
                    .encode("latin-1"))
    err = _error(capsys, ["train", "--config", str(config_file), "--out", str(run)])
    assert err.startswith(f"error: {ann}: annotation file is not UTF-8 (byte 0xe9 on line 1, offset ")
    ann.write_text(json.dumps({**data, "annotations": []}))
    err = _error(capsys, ["train", "--config", str(config_file), "--out", str(run)])
    assert err.startswith(f"error: {ann}: annotations: none of its 2 images has a non-crowd box")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# to do\n")
    err = _error(capsys, ["train", "--config", str(empty), "--out", str(run)])
    assert err.startswith(f"error: {empty}: empty config file")
    assert _no_complete_output(run) and not run.exists()


def test_unreadable_image_in_a_loader_worker_is_one_line(capsys, config_file, tmp_path):
    (tmp_path / "data" / "images" / "0001.png").write_bytes(b"garbage")
    err = _error(capsys, ["train", "--config", str(config_file), "--out", str(tmp_path / "run"),
                          "--set", "data.num_workers=1"])
    assert err.startswith(f"error: {tmp_path / 'data' / 'images' / '0001.png'}: cannot read image")
    assert _no_complete_output(tmp_path / "run")


def test_evaluate_time_and_samples_need_a_finished_run(capsys, tmp_path):
    for argv in (["evaluate", "--run", str(tmp_path), "--out", str(tmp_path / "e")],
                 ["time", "--run", str(tmp_path), "--out", str(tmp_path / "t.json")],
                 ["loss-samples", "--run", str(tmp_path), "--out", str(tmp_path / "s.npz")]):
        assert "result.json: missing" in _error(capsys, argv)
    assert list(tmp_path.iterdir()) == []


def test_tampered_final_weights(capsys, config_file, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--out", str(run)]) == 0
    final = run / "model_final.pt"
    final.write_bytes(final.read_bytes()[:-100])
    err = _error(capsys, ["evaluate", "--run", str(run), "--out", str(tmp_path / "eval")])
    assert f"{final}: not a readable checkpoint, truncated or corrupt" in err
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_parse_overrides():
    assert parse_overrides(["solver.iterations=10", "loss.alpha=null", "data.train_min_sizes=[400, 500]"]) == {
        "solver": {"iterations": 10}, "loss": {"alpha": None}, "data": {"train_min_sizes": [400, 500]}}
    with pytest.raises(ConfigError):
        parse_overrides(["=3"])
    assert to_dict(tiny_config(Path("/x")))["device"] == "cpu"
