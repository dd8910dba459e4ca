"""Checkpoints: bitwise round trip, atomic replace, safe loading, truncated / tampered / foreign files."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from retinanet.engine import checkpoint
from retinanet.engine.checkpoint import CheckpointError


def _payload() -> dict:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": 7, "config": {"a": [1, None]},
            "rng": checkpoint.rng_state(), "bf16": torch.randn(3).bfloat16()}


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_round_trip_is_bitwise_and_leaves_no_temporary(tmp_path):
    payload = _payload()
    path = tmp_path / "sub" / "last.pt"
    checkpoint.save(payload, path)
    assert _equal(checkpoint.load(path), payload)
    assert os.listdir(path.parent) == ["last.pt"]


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save({"iteration": 1}, path)

    def broken(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save({"iteration": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load(path) == {"iteration": 1} and os.listdir(tmp_path) == ["last.pt"]


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save(_payload(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"^{path}: not a readable checkpoint, truncated or corrupt"):
        checkpoint.load(path)


def test_modified_tensor_bytes_fail_the_digest(tmp_path):
    path = tmp_path / "last.pt"
    payload = {"w": torch.zeros(10000)}
    checkpoint.save(payload, path)
    raw = bytearray(path.read_bytes())
    start = raw.find(bytes(40000))  # the zero tensor's storage
    raw[start + 100] = 0x3F
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="digest mismatch"):
        checkpoint.load(path)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_code_in_the_file_is_not_executed(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "payload": {"x": _Evil(marker)}}, path)
    with pytest.raises(CheckpointError, match=rf"^{path}: refused"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError, match="refused"):
        checkpoint.load_weights(path)
    assert not marker.exists()


def test_foreign_and_missing_files(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.ones(2)}, plain)
    with pytest.raises(CheckpointError, match="not a retinanet-checkpoint/1 file"):
        checkpoint.load(plain)
    assert torch.equal(checkpoint.load_weights(plain)["weight"], torch.ones(2))  # a plain state_dict is fine
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoint.load(garbage)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "none.pt")
    checkpoint.save({"iteration": 3}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="field 'model' missing"):
        checkpoint.load_weights(tmp_path / "state.pt")


def test_rng_state_round_trip():
    state = checkpoint.rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.set_rng_state(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, devices: int, current: int = 0) -> tuple[dict, list]:
    """torch.cuda as a process that sees ``devices`` GPUs (current: ``current``): the CUDA RNG states set, by
    device, and the CUDA seeds set. A device index past the last one fails, as it does on a real machine."""
    states: dict[int, torch.Tensor] = {}
    seeds: list[int] = []

    def set_rng_state(state: torch.Tensor, device: int | str = "cuda") -> None:
        index = device if isinstance(device, int) else current
        if index >= devices:
            raise IndexError(f"invalid device ordinal {index} (this machine has {devices})")
        states[index] = state

    monkeypatch.setattr(torch.cuda, "is_available", lambda: devices > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all",  # torch's own loop over the saved states
                        lambda all_states: [set_rng_state(s, i) for i, s in enumerate(all_states)])
    monkeypatch.setattr(torch.cuda, "manual_seed", seeds.append)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeds.append)
    return states, seeds


def _cpu_state_with_cuda(cuda) -> dict:
    state = checkpoint.rng_state()
    state["cuda"] = cuda
    return state


GPU_STATES = [torch.full((16,), i, dtype=torch.uint8) for i in range(4)]
"""Stand-ins for the CUDA RNG states of 4 GPUs."""


def test_a_checkpoint_of_four_gpus_restores_on_two(monkeypatch):
    """Older checkpoints hold rank 0's state with every GPU's CUDA state (torch.cuda.get_rng_state_all); restoring
    one on 2 GPUs used to fail on device 2. Now each process takes its own device's entry."""
    torch.manual_seed(5)
    legacy = _cpu_state_with_cuda(GPU_STATES)
    expected = torch.rand(3)
    states, _ = _fake_cuda(monkeypatch, devices=2, current=1)
    assert checkpoint.set_rng_state(legacy, rank=0, seed=0, iteration=10)
    assert torch.equal(torch.rand(3), expected)  # the CPU generator is restored
    assert list(states) == [1] and torch.equal(states[1], GPU_STATES[1])


def test_per_rank_states_restore_on_fewer_processes_and_seed_the_missing_ranks(monkeypatch):
    """A checkpoint of 4 processes (one CUDA state each): on 2 processes each rank takes its own; on 8, ranks
    4-7 are seeded from (seed, iteration, rank): reproducibly, and differently per rank."""
    saved = {"ranks": [_cpu_state_with_cuda(GPU_STATES[r]) for r in range(4)]}
    states, _ = _fake_cuda(monkeypatch, devices=2, current=1)
    assert checkpoint.set_rng_state(saved, rank=1, seed=0, iteration=10)
    assert torch.equal(states[1], GPU_STATES[1])

    def draws(rank: int) -> tuple:
        _, seeds = _fake_cuda(monkeypatch, devices=8, current=rank)
        assert not checkpoint.set_rng_state(saved, rank=rank, seed=3, iteration=10)
        assert seeds and seeds[-1] == checkpoint.derived_seed(3, 10, rank)
        return torch.rand(2), np.random.rand(2), random.random()

    a, b, c = draws(5), draws(5), draws(6)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not torch.equal(a[0], c[0])


def test_cuda_states_are_ignored_without_cuda(monkeypatch):
    saved = {"ranks": [_cpu_state_with_cuda(GPU_STATES[r]) for r in range(4)]}
    states, seeds = _fake_cuda(monkeypatch, devices=0)
    assert checkpoint.set_rng_state(saved, rank=2) and not states and not seeds
