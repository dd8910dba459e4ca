import math

import pytest
import torch

from retinanet.config import AnchorConfig
from retinanet.modeling.anchors import STRIDES, cell_anchors, feature_shapes
from retinanet.modeling.anchors import build_anchor_generator as AnchorGenerator  # the generator of an AnchorConfig


def test_paper_anchor_shapes():
    cell = cell_anchors(32.0, 3, [0.5, 1.0, 2.0])
    w = cell[:, 2] - cell[:, 0]
    h = cell[:, 3] - cell[:, 1]
    sides = [32 * 2 ** (k / 3) for k in range(3) for _ in range(3)]
    torch.testing.assert_close((w * h).sqrt(), torch.tensor(sides))
    torch.testing.assert_close(h / w, torch.tensor([0.5, 1.0, 2.0] * 3))
    torch.testing.assert_close(cell[:, :2] + cell[:, 2:], torch.zeros(9, 2))  # centred


@pytest.mark.parametrize("scales", [1, 2, 3, 4])
@pytest.mark.parametrize("ratios", [[1.0], [0.5, 1.0, 2.0]])
def test_table_1c_grid_is_expressible(scales, ratios):
    gen = AnchorGenerator(AnchorConfig(num_scales=scales, aspect_ratios=ratios))
    assert gen.num_anchors == scales * len(ratios)
    shapes = feature_shapes(128, 128)
    assert gen(shapes).shape == (sum(h * w for h, w in shapes) * scales * len(ratios), 4)


def test_layout_level_then_y_then_x_then_anchor():
    gen = AnchorGenerator(AnchorConfig())
    shapes = feature_shapes(256, 384)
    a = gen(shapes)
    assert gen.level_sizes(shapes) == [h * w * 9 for h, w in shapes]
    # P3, location (y=1, x=2), anchor 4 (scale 1, ratio 1:1)
    idx = (1 * shapes[0][1] + 2) * 9 + 4
    cx, cy = (a[idx, 0] + a[idx, 2]) / 2, (a[idx, 1] + a[idx, 3]) / 2
    assert (cx.item(), cy.item()) == (2.5 * 8, 1.5 * 8)
    torch.testing.assert_close(a[idx, 2] - a[idx, 0], torch.tensor(32 * 2 ** (1 / 3)))
    # first anchor of P7 is the smallest 512 anchor at (64, 64)
    start = sum(gen.level_sizes(shapes)[:4])
    torch.testing.assert_close(a[start], torch.tensor([64 - 256 / math.sqrt(0.5), 64 - 256 * math.sqrt(0.5),
                                                       64 + 256 / math.sqrt(0.5), 64 + 256 * math.sqrt(0.5)]) / 1)


def test_anchor_count_at_600x1000():
    """~100k anchors per image at the paper's 600 px scale (section 4): 113,193 unpadded, 122,760 when padded to a
    multiple of 128 (640 x 1024) as the data layer pads."""
    gen = AnchorGenerator(AnchorConfig())
    assert sum(gen.level_sizes(feature_shapes(600, 1000))) == 113_193
    assert sum(gen.level_sizes(feature_shapes(640, 1024))) == 122_760
    assert STRIDES == (8, 16, 32, 64, 128)


def test_anchors_are_cached_per_padded_size_device_and_dtype(monkeypatch):
    gen = AnchorGenerator(AnchorConfig())
    a, b = feature_shapes(640, 896), feature_shapes(896, 640)
    first = gen(a)
    assert gen(a) is first and gen(list(a), torch.device("cpu")) is first  # same key however it is spelled
    assert gen(b) is not first and gen(a) is first  # two padded sizes live side by side
    double = gen(a, dtype=torch.float64)
    assert double.dtype == torch.float64 and double is not first
    torch.testing.assert_close(double.float(), first, rtol=0, atol=0)
    monkeypatch.setattr("retinanet.modeling.anchors.CACHED_SIZES", 2)
    gen = AnchorGenerator(AnchorConfig())
    x, y, z = (feature_shapes(128 * k, 128) for k in (1, 2, 3))
    ax = gen(x)
    gen(y)
    assert gen(x) is ax  # x is now the most recently used
    gen(z)  # evicts y, the least recently used
    assert gen(x) is ax and len(gen._cache) == 2 and all(k[0] != tuple(y) for k in gen._cache)


def test_anchors_are_built_on_the_device_that_asks():
    """Built where they are used: after the per-device copy of the cell anchors, a new padded size runs no op on
    another device (on a GPU, a host-to-device copy per batch would wait for the queued work). The meta device
    stands in for a GPU: nothing on it is computed, so a CPU tensor anywhere would show."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Devices(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in [*args, *(kwargs or {}).values(), out]:
                if isinstance(t, torch.Tensor):
                    self.seen.add((str(func), t.device.type))
            return out

    gen = AnchorGenerator(AnchorConfig())
    gen(feature_shapes(128, 128), "meta")
    with Devices() as mode:
        out = gen(feature_shapes(640, 1024), "meta")
    assert out.device.type == "meta" and out.shape == (122_760, 4)
    assert mode.seen and {device for _, device in mode.seen} == {"meta"}, sorted(mode.seen)
