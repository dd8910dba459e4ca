"""The benchmark harness itself (no timings): the peer computes what ours computes, with the same weights."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_coco import tiny_config, write_coco

from benchmarks import detector, focal, harness, peer_training, run, study
from benchmarks.peer import PassThroughTransform, comparable_config, peer_state_dict
from benchmarks.peer_training import ours_state_dict
from retinanet.config import dump
from retinanet.engine import checkpoint
from retinanet.engine.evaluate import evaluate_run
from retinanet.engine.train import train
from retinanet.modeling.detector import build_model

TINY = detector.Setting(name="tiny", depth=18, fpn_channels=32, head_convs=2, num_classes=3, image_size=64, batch=2)


@pytest.fixture(scope="module")
def pair():
    ours, peer, cfg = detector.build_pair(TINY)
    images, targets = detector.make_batch(TINY)
    return ours, peer, cfg, images, targets


def test_peer_has_our_weights_and_frozen_layers(pair) -> None:
    ours, peer, *_ = pair
    assert isinstance(peer.transform, PassThroughTransform)
    mapped = peer_state_dict(ours, TINY.head_convs)
    peer_state = peer.state_dict()
    assert set(mapped) == set(peer_state)
    for key, value in mapped.items():
        assert torch.equal(value, peer_state[key]), key
    assert [p.requires_grad for p in ours.parameters()] == [p.requires_grad for p in peer.parameters()]
    assert len(peer.head.classification_head.conv) == TINY.head_convs


def test_same_anchors_and_head_outputs(pair) -> None:
    ours, peer, _, images, _ = pair
    with torch.no_grad():
        features = ours.backbone(images)
        peer_features = list(peer.backbone(images).values())
        for a, b in zip(features, peer_features, strict=True):
            # ours folds the frozen BN into the convolutions: the same function, rounded differently
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
        logits, deltas = ours.head(features)
        out = peer.head(features)
    torch.testing.assert_close(out["cls_logits"], logits, rtol=0, atol=0)
    torch.testing.assert_close(out["bbox_regression"], deltas, rtol=0, atol=0)
    shapes = [tuple(f.shape[-2:]) for f in features]
    image_list = PassThroughTransform()(images)[0]
    peer_anchors = peer.anchor_generator(image_list, features)
    assert len(peer_anchors) == images.shape[0]
    torch.testing.assert_close(peer_anchors[0], ours.anchors(shapes), rtol=0, atol=1e-4)


def test_same_training_losses_and_gradients(pair) -> None:
    ours, peer, _, images, targets = pair
    ours.train()
    peer.train()
    ours.zero_grad()
    peer.zero_grad()
    lo = ours(images, targets)
    lp = peer(images, targets)
    torch.testing.assert_close(lo["loss_cls"], lp["classification"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(lo["loss_box"], lp["bbox_regression"], rtol=1e-5, atol=1e-7)
    (lo["loss_cls"] + lo["loss_box"]).backward()
    (lp["classification"] + lp["bbox_regression"]).backward()
    for p, q in zip(ours.parameters(), peer.parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("ours_format", [torch.contiguous_format, torch.channels_last])
def test_same_detections(pair, ours_format) -> None:
    """Ours in either layout (channels-last is what `evaluate` runs on CPU) against the peer in NCHW."""
    ours, peer, _, images, _ = pair
    detector.dense_scores(ours, peer)
    run_peer, run_ours = detector.infer_calls(ours, peer, images[:1], ours_format=ours_format)
    got, ref = run_ours()[0], run_peer()[0]
    ours.to(memory_format=torch.contiguous_format)
    assert 0 < len(got["scores"]) <= 100
    torch.testing.assert_close(got["scores"], ref["scores"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["boxes"], ref["boxes"], rtol=1e-5, atol=1e-3)
    assert torch.equal(got["labels"], ref["labels"])


def test_loss_part_calls_run_both(pair) -> None:
    ours, peer, _, images, targets = pair
    run_peer, run_ours = detector.loss_calls(ours, peer, images, targets)
    run_peer()
    run_ours()


def test_frozen_forward_is_what_the_step_computes_without_gradient(monkeypatch) -> None:
    """The caching row's premise: in a training step the frozen stem + res2 output carries no gradient (a cache
    of it is exact), res3 does; frozen_forward gives that output; in bench_train's table its share of the whole
    step (not of another part) lies in (0, 1). (Its own pair: the steps change the weights.)"""
    ours, _, _ = detector.build_pair(TINY)
    images, _ = detector.make_batch(TINY)
    ours.train()
    c2, c3 = ours.backbone.bottom_up(images, stages=2)
    assert TINY.freeze_at == 2 and not c2.requires_grad and c3.requires_grad
    torch.testing.assert_close(detector.frozen_forward(ours, images, TINY.freeze_at)()[0], c2, rtol=0, atol=0)
    monkeypatch.setattr(detector, "mini_setting", lambda: TINY)
    monkeypatch.setattr(detector, "r50_setting", lambda *_: TINY)
    timed, interleaved = [], harness.interleaved
    monkeypatch.setattr(harness, "interleaved", lambda peer, ours, **kw: timed.append(ours) or interleaved(
        peer, ours, **kw))
    rows = run.bench_train(run.QUICK, lambda _: None)
    names = [r.benchmark for r in rows]
    assert names[:3] == ["train step throughput", "  of which: anchors, matching, losses, their backward",
                         "  of which: the frozen stem + res2 forward"]
    assert timed[2] is timed[0] and 0 < float(rows[2].ratio) < 1  # the same step closure: a share of the step


def test_focal_values_equal() -> None:
    v = focal.compare_values(2000, 80)
    assert v["loss_rel_diff"] < 1e-5
    assert v["grad_max_abs_diff"] < 1e-5 * v["grad_max_abs"]


def test_interleaved_alternates_order() -> None:
    calls: list[str] = []
    t = harness.interleaved(lambda: calls.append("p"), lambda: calls.append("o"), warmup=1, repeats=3)
    assert calls == ["p", "o", "p", "o", "o", "p", "p", "o"]
    assert len(t.peer) == len(t.ours) == 3
    assert harness.Timing([2.0, 4.0, 6.0], [1.0, 1.0, 2.0]).ratio == 4.0


def test_write_doc_keeps_one_block_per_cpu(tmp_path) -> None:
    """A CPU's table replaces only its own block; another CPU's table gets a new section after the last block."""
    doc = tmp_path / "b.md"
    intel, amd = run.markers("Intel(R) Xeon(R) Processor"), run.markers("AMD EPYC 9B45")
    doc.write_text(f"# B\n\nprose before\n\n{intel[0]}\nold\n{intel[1]}\n\nprose after\n")
    run.write_doc(doc, "new table\n", "Intel(R) Xeon(R) Processor")
    assert doc.read_text() == f"# B\n\nprose before\n\n{intel[0]}\nnew table\n{intel[1]}\n\nprose after\n"
    run.write_doc(doc, "amd table\n", "AMD EPYC 9B45")
    run.write_doc(doc, "amd table 2\n", "AMD EPYC 9B45")
    assert doc.read_text() == (f"# B\n\nprose before\n\n{intel[0]}\nnew table\n{intel[1]}\n\n"
                               f"### AMD EPYC 9B45\n\n{amd[0]}\namd table 2\n{amd[1]}\n\nprose after\n")


def test_one_pass_bound_writes_the_two_outputs_of_a_fused_pass() -> None:
    """The bound's work is the fused kernel's traffic: both inputs read once, two arrays of their size written."""
    logits, targets = focal.inputs(64, 5)
    call = focal.one_pass_bound(logits, targets)
    loss, grad = call()
    assert torch.equal(loss, logits.detach()) and torch.equal(grad, targets)
    again = call()  # into the same two buffers: no allocation is timed
    assert (again[0].data_ptr(), again[1].data_ptr()) == (loss.data_ptr(), grad.data_ptr())
    assert loss.data_ptr() not in (logits.data_ptr(), targets.data_ptr())


def test_machine_row_names_the_cpu_and_the_focal_kernel() -> None:
    row = run.machine_row()
    assert row.setting.startswith(harness.cpu_model()) and "ATen vector ISA" in row.setting
    assert row.ours.startswith("focal loss kernel: ") and row.ours != "focal loss kernel: "


def test_study_wall_time_sums_benchmark_files(tmp_path) -> None:
    assert study.study_wall_time(tmp_path / "missing") is None
    (tmp_path / "train").mkdir()
    header = "s\th:m:s\tmax_rss\n"
    (tmp_path / "train" / "a.tsv").write_text(header + "10.5\t0:00:10\t1\n")
    (tmp_path / "train" / "b.tsv").write_text(header + "4.5\t0:00:04\t1\n")
    (tmp_path / "make_dataset.tsv").write_text(header + "5\t0:00:05\t1\n")
    wall = study.study_wall_time(tmp_path)
    assert wall == {"train": 15.0, "make_dataset": 5.0, "total": 20.0, "jobs": 3.0}


def test_ap_row_reads_run_outputs(tmp_path) -> None:
    assert run._ap_row(None).verdict.startswith("not measured")
    for name, ap in (("fp32", 20.0), ("bf16", 19.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(f'{{"AP": {ap}}}')
    row = run._ap_row(tmp_path)
    assert row.ratio == "-0.50 AP"


def test_ours_state_dict_inverts_peer_state_dict(pair) -> None:
    ours, peer, *_ = pair
    back = ours_state_dict(peer.state_dict(), ours, TINY.head_convs)
    state = ours.state_dict()
    assert list(back) == list(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key


def _tiny_comparable(tmp_path, solver: dict):
    write_coco(tmp_path / "data", num_images=4, objects=2)
    return comparable_config(tiny_config(tmp_path / "data", {"solver": {"log_period": 1, **solver}}))


def test_peer_training_takes_our_training_step(tmp_path) -> None:
    """Same seed, batches, lr, momentum and clipping: after two SGD steps the peer's weights equal ours up to float
    rounding (fused vs plain SGD, folded vs unfolded norms), and its run directory goes through our evaluator."""
    cfg = _tiny_comparable(tmp_path, {"iterations": 2, "base_lr": 0.05, "clip_grad_norm": 1.0})
    ours_result = train(cfg, tmp_path / "ours")
    peer_result = peer_training.train_peer(cfg, tmp_path / "peer")
    assert ours_result["status"] == peer_result["status"] == "completed"
    start = build_model(cfg).state_dict()
    ours_w = checkpoint.load(tmp_path / "ours" / "model_final.pt")["model"]
    peer_w = checkpoint.load(tmp_path / "peer" / "model_final.pt")["model"]
    moved = 0
    for key, value in ours_w.items():
        if key == "fg_ema":
            continue
        torch.testing.assert_close(peer_w[key], value, rtol=1e-4, atol=1e-6, msg=key)
        moved += not torch.equal(start[key], value)
    assert moved > 10  # the steps changed the weights: the test compares trained weights, not the init
    ours_log = [json.loads(line) for line in (tmp_path / "ours" / "log.jsonl").read_text().splitlines()]
    peer_log = [json.loads(line) for line in (tmp_path / "peer" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in peer_log] == [1, 2]
    for a, b in zip(ours_log, peer_log, strict=True):
        assert a["lr"] == b["lr"]
        assert a["loss_cls"] == pytest.approx(b["loss_cls"], rel=1e-4)
        assert a["loss_box"] == pytest.approx(b["loss_box"], rel=1e-4)
    metrics = evaluate_run(tmp_path / "peer", tmp_path / "peer" / "eval")
    assert metrics["status"] == "completed" and metrics["num_images"] == 4


def test_peer_training_stops_a_diverging_run(tmp_path) -> None:
    cfg = _tiny_comparable(tmp_path, {"iterations": 30, "base_lr": 1.0e4})
    result = peer_training.train_peer(cfg, tmp_path / "peer")
    assert result["status"] == "diverged" and 1 <= result["iteration"] <= 30
    assert not (tmp_path / "peer" / "model_final.pt").exists()


def test_peer_training_cli_compares_both_sides(tmp_path, capsys) -> None:
    write_coco(tmp_path / "data", num_images=4, objects=2)
    cfg = tiny_config(tmp_path / "data", {"loss": {"gamma": 0.0, "alpha": 0.75}, "solver": {"iterations": 1}})
    dump(cfg, tmp_path / "run.yaml")
    assert peer_training.main(["--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "cmp"),
                               "--set", "solver.iterations=2"]) == 0
    summary = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    # both sides ran the peer's loss choices (torchvision hard-codes FL gamma 2, alpha .25), for 2 iterations
    assert (summary["config"]["loss"]["gamma"], summary["config"]["loss"]["alpha"]) == (2.0, 0.25)
    for side in ("ours", "peer"):
        assert summary[side]["status"] == "completed" and summary[side]["iteration"] == 2
        assert (tmp_path / "cmp" / side / "eval" / "metrics.json").is_file()
    assert "ours: completed at iteration 2" in capsys.readouterr().out
