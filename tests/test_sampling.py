"""OHEM minibatch selection (section 5.1, Table 1d) on hand-made anchors, and against full NMS."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import nms

from retinanet.modeling.ohem import ohem_mask

POS, BG, IGNORE = 0, -1, -2


def _disjoint_boxes(n: int) -> torch.Tensor:
    """n unit-spaced 10x10 boxes on a row that do not overlap."""
    x0 = torch.arange(n, dtype=torch.float32) * 20
    return torch.stack([x0, torch.zeros(n), x0 + 10, torch.full((n,), 10.0)], 1)


def _selected(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask).squeeze(1).tolist()


def test_nms_suppresses_overlapping_lower_loss_anchor() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60], [100, 0, 110, 10]], dtype=torch.float32)
    loss = torch.tensor([5.0, 4.0, 3.0, 1.0])  # anchor 1 overlaps anchor 0 with IoU 10/11
    labels = torch.tensor([BG, BG, BG, BG])
    assert _selected(ohem_mask(loss, boxes, labels, batch=2, nms_thresh=0.7, pos_fraction=None)) == [0, 2]
    # above the threshold the overlap does not suppress
    assert _selected(ohem_mask(loss, boxes, labels, batch=2, nms_thresh=0.95, pos_fraction=None)) == [0, 1]


def test_ignored_anchors_are_never_selected_nor_suppress() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60]], dtype=torch.float32)
    loss = torch.tensor([9.0, 4.0, 3.0])
    labels = torch.tensor([IGNORE, POS, BG])
    mask = ohem_mask(loss, boxes, labels, batch=3, nms_thresh=0.5, pos_fraction=None)
    assert _selected(mask) == [1, 2]  # anchor 0 (highest loss) is ignored: it neither counts nor suppresses 1
    assert not ohem_mask(loss, boxes, torch.full((3,), IGNORE), batch=3, nms_thresh=0.5, pos_fraction=None).any()


def test_batch_size_and_highest_losses() -> None:
    g = torch.Generator().manual_seed(0)
    loss = torch.rand(50, generator=g)
    labels = torch.full((50,), BG)
    mask = ohem_mask(loss, _disjoint_boxes(50), labels, batch=8, nms_thresh=0.7, pos_fraction=None)
    assert mask.dtype == torch.bool and mask.shape == (50,)
    assert sorted(_selected(mask)) == sorted(loss.topk(8).indices.tolist())
    # fewer candidates than the batch: all of them
    assert int(ohem_mask(loss[:5], _disjoint_boxes(5), labels[:5], batch=8, nms_thresh=0.7,
                         pos_fraction=None).sum()) == 5


def test_ohem_1_to_3_ratio() -> None:
    """Positives fill at most batch * pos_fraction slots (highest loss first), negatives the rest."""
    n = 30
    loss = torch.arange(n, 0, -1, dtype=torch.float32)  # anchor 0 has the highest loss
    labels = torch.full((n,), BG)
    labels[:6] = torch.tensor([3, 1, 0, 7, 2, 5])  # the 6 hardest anchors are positives
    mask = ohem_mask(loss, _disjoint_boxes(n), labels, batch=8, nms_thresh=0.5, pos_fraction=0.25)
    assert _selected(mask) == [0, 1, 6, 7, 8, 9, 10, 11]  # 2 positives : 6 negatives
    plain = ohem_mask(loss, _disjoint_boxes(n), labels, batch=8, nms_thresh=0.5, pos_fraction=None)
    assert _selected(plain) == list(range(8))  # plain OHEM takes 6 positives : 2 negatives
    # few positives: all of them, the rest negatives (ratio below 1:3)
    labels_few = torch.full((n,), BG)
    labels_few[20] = 4
    mask = ohem_mask(loss, _disjoint_boxes(n), labels_few, batch=8, nms_thresh=0.5, pos_fraction=0.25)
    assert _selected(mask) == [0, 1, 2, 3, 4, 5, 6, 20]
    # negatives run short: never more than 1 positive per 3 negatives
    labels_short = torch.full((n,), POS)
    labels_short[[3, 9, 12]] = BG
    mask = ohem_mask(loss, _disjoint_boxes(n), labels_short, batch=8, nms_thresh=0.5, pos_fraction=0.25)
    assert _selected(mask) == [0, 3, 9, 12]


def test_ties_are_broken_by_anchor_index_deterministically() -> None:
    loss = torch.tensor([1.0, 2.0, 2.0, 2.0, 1.0, 2.0])
    labels = torch.full((6,), BG)
    boxes = _disjoint_boxes(6)
    first = ohem_mask(loss, boxes, labels, batch=3, nms_thresh=0.5, pos_fraction=None)
    assert _selected(first) == [1, 2, 3]
    for _ in range(3):
        assert torch.equal(ohem_mask(loss, boxes, labels, batch=3, nms_thresh=0.5, pos_fraction=None), first)
    # with equal losses the lower index survives NMS and suppresses its overlapping twin
    boxes[2] = boxes[1]
    assert _selected(ohem_mask(loss, boxes, labels, batch=3, nms_thresh=0.5, pos_fraction=None)) == [1, 3, 5]


def _reference(loss, boxes, labels, batch, nms_thresh, pos_fraction):
    """Full NMS over every non-ignored anchor, then the selection rule, written directly."""
    cand = torch.nonzero(labels != IGNORE).squeeze(1)
    order = cand[torch.sort(loss[cand], descending=True, stable=True).indices]
    rank_score = torch.arange(order.numel(), 0, -1, dtype=torch.float32)
    kept = order[nms(boxes[order], rank_score, nms_thresh)]
    mask = torch.zeros(labels.shape, dtype=torch.bool)
    if pos_fraction is None:
        mask[kept[:batch]] = True
        return mask
    pos, neg = kept[labels[kept] >= 0], kept[labels[kept] < 0]
    num_pos = min(pos.numel(), int(batch * pos_fraction))
    num_neg = min(neg.numel(), batch - num_pos)
    num_pos = min(num_pos, num_neg // 3) if pos_fraction == 0.25 else num_pos
    mask[pos[:num_pos]] = True
    mask[neg[:num_neg]] = True
    return mask


@pytest.mark.parametrize("pos_fraction", [None, 0.25])
@pytest.mark.parametrize(("batch", "nms_thresh"), [(128, 0.7), (300, 0.5), (512, 0.5)])
def test_prefix_nms_equals_full_nms(pos_fraction: float | None, batch: int, nms_thresh: float) -> None:
    """The growing-prefix NMS gives exactly the minibatch of NMS over all anchors (dense overlapping anchors)."""
    g = torch.Generator().manual_seed(1)
    n = 3000
    centers = torch.rand(n, 2, generator=g) * 200
    sizes = 8 + torch.rand(n, 2, generator=g) * 24
    boxes = torch.cat([centers - sizes / 2, centers + sizes / 2], 1)
    loss = torch.rand(n, generator=g) ** 4
    labels = torch.full((n,), BG)
    labels[torch.rand(n, generator=g) < 0.02] = POS
    labels[torch.rand(n, generator=g) < 0.05] = IGNORE
    loss[:40] = 0.5  # some ties
    mask = ohem_mask(loss, boxes, labels, batch=batch, nms_thresh=nms_thresh, pos_fraction=pos_fraction)
    assert torch.equal(mask, _reference(loss, boxes, labels, batch, nms_thresh, pos_fraction))
    assert int(mask.sum()) <= batch and not mask[labels == IGNORE].any()
    if pos_fraction is not None:
        assert 3 * int(mask[labels >= 0].sum()) <= int(mask[labels == BG].sum())


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="ohem_mask: expected"):
        ohem_mask(torch.zeros(3), torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), batch=2, nms_thresh=0.5,
                  pos_fraction=None)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        ohem_mask(torch.zeros(3), torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), batch=0, nms_thresh=0.5,
                  pos_fraction=None)


def _dense_case(n: int, seed: int, positives_last: bool):
    """n overlapping boxes, ~2% positives. ``positives_last``: every positive has a lower loss than every negative
    (OHEM 1:3's worst case: its NMS must reach the lowest-loss positive); else a higher one (early training, when
    every positive is a hard example)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(n, 2, generator=g) * 400
    sizes = 8 + torch.rand(n, 2, generator=g) * 24
    boxes = torch.cat([centers - sizes / 2, centers + sizes / 2], 1)
    loss = torch.rand(n, generator=g)
    labels = torch.full((n,), BG)
    labels[torch.rand(n, generator=g) < 0.02] = POS
    loss[labels >= 0] += -1.0 if positives_last else 1.0
    return loss, boxes, labels


@pytest.mark.parametrize("pos_fraction", [None, 0.25])
def test_candidate_cap_bounds_nms_and_changes_nothing_where_it_does_not_bind(monkeypatch, pos_fraction) -> None:
    """NMS sees at most NMS_CANDIDATES anchors plus the positives below them, where it would otherwise reach the
    lowest-loss positive (OHEM 1:3: all 6000 anchors here); the minibatch equals full NMS's when the cap does not
    bind (positives among the top-loss anchors, enough survivors above the cap)."""
    from retinanet.modeling import ohem as sampling

    sizes = []
    real_nms = sampling.nms
    monkeypatch.setattr(sampling, "nms", lambda b, s, t: (sizes.append(len(b)), real_nms(b, s, t))[1])
    monkeypatch.setattr(sampling, "NMS_CANDIDATES", 1024)
    loss, boxes, labels = _dense_case(6000, seed=2, positives_last=True)
    num_pos = int((labels >= 0).sum())
    mask = ohem_mask(loss, boxes, labels, batch=128, nms_thresh=0.5, pos_fraction=pos_fraction)
    assert max(sizes) <= 1024 + num_pos < 6000
    uncapped = _reference(loss, boxes, labels, 128, 0.5, pos_fraction)
    assert torch.equal(mask[labels < 0], uncapped[labels < 0])  # enough negatives survive above the cap
    if pos_fraction is not None:  # all 32 positive slots: the same count, from the positives below the cap
        assert int(mask[labels >= 0].sum()) == int(uncapped[labels >= 0].sum())

    loss, boxes, labels = _dense_case(6000, seed=3, positives_last=False)  # the cap does not bind
    sizes.clear()
    mask = ohem_mask(loss, boxes, labels, batch=128, nms_thresh=0.5, pos_fraction=pos_fraction)
    assert torch.equal(mask, _reference(loss, boxes, labels, 128, 0.5, pos_fraction))
    assert max(sizes) <= 1024 + int((labels >= 0).sum())
