import math

import torch

from retinanet.modeling import boxes


def test_encode_decode_round_trip():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 100
    wh = torch.rand(200, 2, generator=g) * 50 + 1
    anchors = torch.cat([xy, xy + wh], 1)
    xy2 = torch.rand(200, 2, generator=g) * 100
    wh2 = torch.rand(200, 2, generator=g) * 80 + 1
    gt = torch.cat([xy2, xy2 + wh2], 1)
    deltas = boxes.encode(anchors.double(), gt.double())
    torch.testing.assert_close(boxes.decode(deltas, anchors.double()), gt.double())


def test_encode_matches_rcnn_parameterization_by_hand():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), w 10, h 20
    gt = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), w 20, h 20
    expected = torch.tensor([[(12 - 5) / 10, (14 - 10) / 20, math.log(20 / 10), math.log(20 / 20)]])
    torch.testing.assert_close(boxes.encode(anchor, gt), expected)


def test_decode_clamps_scale():
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    out = boxes.decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), anchor)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(1000.0))


def test_clip_per_image_sizes():
    b = torch.tensor([[[-5.0, -5.0, 50.0, 50.0]], [[-5.0, 10.0, 50.0, 50.0]]])
    out = boxes.clip(b, torch.tensor([[30.0], [40.0]]), torch.tensor([[20.0], [45.0]]))
    assert out.tolist() == [[[0.0, 0.0, 20.0, 30.0]], [[0.0, 10.0, 45.0, 40.0]]]
