"""Arithmetic switches: TF32 set from ``allow_tf32`` both ways and recorded in provenance (``device.tf32``);
autocast with fp16 loss scaling (``precision``); cuDNN autotuning (``cudnn_benchmark``); asynchronous batch copies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from tiny_coco import tiny_config, write_coco

from retinanet.config import ConfigError, RunConfig, from_dict
from retinanet.engine import checkpoint
from retinanet.engine import train as train_module
from retinanet.engine.precision import autocast, grad_scaler, set_cudnn_benchmark, set_tf32, tf32_state
from retinanet.rundir import provenance
from retinanet.tools import probe


@pytest.fixture(autouse=True)
def _restore_tf32() -> Iterator[None]:
    """The switches are process-wide: give the next test torch's values back."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    benchmark = torch.backends.cudnn.benchmark
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    torch.backends.cudnn.benchmark = benchmark


@pytest.mark.parametrize("allow", [True, False])
def test_set_tf32_sets_both_switches(allow):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not allow
    assert set_tf32(allow) == {"matmul": allow, "cudnn": allow} == tf32_state()
    assert torch.backends.cuda.matmul.allow_tf32 is allow and torch.backends.cudnn.allow_tf32 is allow


@pytest.mark.parametrize("allow", [True, False])
def test_provenance_records_the_switches_in_effect(allow):
    set_tf32(allow)
    assert provenance.device_info(torch.device("cpu"))["tf32"] == {"matmul": allow, "cudnn": allow}
    assert provenance.collect(torch.device("cpu"))["device"]["tf32"] == {"matmul": allow, "cudnn": allow}


def test_the_paper_default_is_fp32_without_tf32():
    assert RunConfig().allow_tf32 is False
    assert from_dict({"allow_tf32": True}).allow_tf32 is True
    with pytest.raises(ValueError, match="allow_tf32: expected true/false"):
        from_dict({"allow_tf32": "yes"})


def test_autocast_and_loss_scaling_per_precision():
    cpu = torch.device("cpu")
    assert not autocast(cpu, "fp32")._enabled and not grad_scaler("fp32", cpu).is_enabled()
    assert autocast(cpu, "bf16").fast_dtype == torch.bfloat16 and not grad_scaler("bf16", cpu).is_enabled()
    assert autocast(cpu, "fp16").fast_dtype == torch.float16 and grad_scaler("fp16", cpu).is_enabled()
    assert from_dict({"precision": "fp16"}).precision == "fp16"
    with pytest.raises(ConfigError, match="precision: 'fp8' is not one of 'fp32', 'bf16', 'fp16'"):
        from_dict({"precision": "fp8"})
    with pytest.raises(ValueError, match="precision: 'fp8'"):
        autocast(cpu, "fp8")


def test_fp16_training_scales_the_loss_and_checkpoints_the_scale(tmp_path, monkeypatch):
    """fp16 (pre-Ampere GPUs) trains under float16 autocast with a GradScaler (torch's CPU autocast and scaler stand
    in for the GPU's here): the scaler is on, its state goes into the checkpoint, the run completes with finite
    weights. fp32 keeps a disabled scaler, so its update is plain SGD."""
    write_coco(tmp_path / "data", num_images=2)
    saved, scalers = [], []
    real_save, real_scaler = checkpoint.save, train_module.grad_scaler
    monkeypatch.setattr(checkpoint, "save", lambda state, path: (saved.append(state), real_save(state, path)))
    monkeypatch.setattr(train_module, "grad_scaler", lambda *a: scalers.append(real_scaler(*a)) or scalers[-1])
    dtypes = []
    real_forward = train_module.build_model

    def build(cfg):
        model = real_forward(cfg)
        model.head.register_forward_hook(lambda mod, inp, out: dtypes.append(out[0].dtype))
        return model

    monkeypatch.setattr(train_module, "build_model", build)
    # The backbone frozen (random weights as a pretrained file): torch's fp16 convolution backward on CPU is a
    # slow reference loop (~4 s per step of the tiny model); the FPN and head still train in fp16.
    frozen = {"model": {"pretrained": probe.random_backbone_file(18), "norm": "frozen_bn", "freeze_at": 5},
              "solver": {"iterations": 2, "checkpoint_period": 1}}
    cfg = tiny_config(tmp_path / "data", {"precision": "fp16", **frozen})
    result = train_module.train(cfg, tmp_path / "fp16")
    assert result["status"] == "completed" and result["precision"] == "fp16"
    assert scalers[0].is_enabled() and 0 < scalers[0].get_scale() <= 65536.0
    assert set(dtypes) == {torch.float16}  # the head ran in half precision
    (state,) = [s for s in saved if "optimizer" in s]  # the checkpoint at iteration 1 of 2
    assert state["scaler"]["scale"] > 0
    dtypes.clear()
    assert train_module.train(tiny_config(tmp_path / "data", frozen), tmp_path / "fp32")["status"] == "completed"
    assert not scalers[1].is_enabled() and set(dtypes) == {torch.float32}


@pytest.mark.parametrize("enabled", [True, False])
def test_train_sets_cudnn_benchmark_from_the_config(tmp_path, enabled):
    assert RunConfig().cudnn_benchmark is True
    assert set_cudnn_benchmark(not enabled) is (not enabled)
    write_coco(tmp_path / "data", num_images=2)
    cfg = tiny_config(tmp_path / "data", {"cudnn_benchmark": enabled, "solver": {"iterations": 1}})
    train_module.train(cfg, tmp_path / "run")
    assert torch.backends.cudnn.benchmark is enabled


def test_batches_are_copied_to_the_device_asynchronously():
    """Images and targets go to the device with ``non_blocking`` copies (from pinned memory on CUDA they overlap
    the queued work); the meta device stands in for a GPU."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Copies(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default:
                self.calls.append(dict(kwargs or {}))
            return func(*args, **(kwargs or {}))

    images = torch.zeros(2, 3, 8, 8)
    targets = [{"boxes": torch.zeros(1, 4), "labels": torch.zeros(1, dtype=torch.long)} for _ in range(2)]
    with Copies() as mode:
        x, t = train_module.to_device(images, targets, torch.device("meta"), channels_last=True)
    assert x.device.type == "meta" and x.is_contiguous(memory_format=torch.channels_last)
    assert all(v.device.type == "meta" for d in t for v in d.values())
    assert len(mode.calls) == 5 and all(c.get("non_blocking") is True for c in mode.calls)


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                                  ("fp16", torch.float16)])
def test_evaluation_runs_in_the_precision_the_run_trained_in(tmp_path, precision, dtype):
    from retinanet.data.dataset import build_dataset
    from retinanet.engine.evaluate import detect
    from retinanet.modeling.detector import build_model

    write_coco(tmp_path / "data", num_images=2)
    cfg = tiny_config(tmp_path / "data", {"precision": precision})
    model = build_model(cfg).eval()
    seen = []
    model.head.register_forward_hook(lambda mod, inp, out: seen.append(out[0].dtype))
    detect(model, build_dataset(cfg.data, train=False), cfg, torch.device("cpu"))
    assert seen and set(seen) == {dtype}
