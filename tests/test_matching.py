import torch

from retinanet.modeling.matching import BACKGROUND as B
from retinanet.modeling.matching import IGNORE as I
from retinanet.modeling.matching import match, match_with_demoted

# Hand-made IoU of 3 GT boxes with 7 anchors.
#   a0: 0.70 with gt0 -> fg 0 everywhere
#   a1: 0.45 with gt0 (not gt0's best) -> ignored everywhere
#   a2: 0.30 best -> background
#   a3: 0.35 with gt1 (not gt1's best) -> background
#   a4: 0.45 with gt1, gt1's best (below 0.5) -> low-quality: fg under detectron and any, ignored under none
#   a5: 0.32 with gt2, gt2's best (below 0.4) -> fg only under any; background under detectron and none
#   a6: nothing -> background
IOU = torch.tensor([
    [0.70, 0.45, 0.30, 0.00, 0.10, 0.00, 0.0],
    [0.20, 0.10, 0.00, 0.35, 0.45, 0.05, 0.0],
    [0.00, 0.00, 0.25, 0.00, 0.00, 0.32, 0.0],
])


def _m(iou, policy, valid=None):
    return match(iou, valid, fg_iou=0.5, bg_iou=0.4, low_quality=policy).tolist()


def test_detectron_policy():
    assert _m(IOU, "detectron") == [0, I, B, B, 1, B, B]


def test_any_policy():
    assert _m(IOU, "any") == [0, I, B, B, 1, 2, B]


def test_none_policy():
    assert _m(IOU, "none") == [0, I, B, B, I, B, B]


def test_ties_for_a_gts_best_anchor_all_become_foreground():
    iou = torch.tensor([[0.45, 0.45, 0.1]])
    assert _m(iou, "detectron") == [0, 0, B]
    assert _m(iou, "none") == [I, I, B]


def test_low_quality_anchor_goes_to_its_own_best_gt():
    # a0 is gt1's best (0.42) but its own best GT is gt0 (0.48): matched to gt0.
    iou = torch.tensor([[0.48, 0.60], [0.42, 0.0]])
    assert _m(iou, "detectron") == [0, 0]


def test_image_without_objects_is_all_background():
    assert _m(torch.zeros(0, 5), "detectron") == [B] * 5
    assert match(torch.zeros(2, 0, 5), torch.zeros(2, 0, dtype=torch.bool), fg_iou=0.5, bg_iou=0.4,
                 low_quality="any").tolist() == [[B] * 5] * 2


def test_no_anchors_gives_an_empty_result_of_the_right_shape():
    """R = 0 (e.g. every anchor filtered out): ``[N, 0]`` / ``[0]``, with or without GT boxes, every policy."""
    for policy in ("detectron", "any", "none"):
        for m in (0, 3):
            one = match(torch.zeros(m, 0), fg_iou=0.5, bg_iou=0.4, low_quality=policy)
            assert one.shape == (0,) and one.dtype == torch.long
            batch = match(torch.zeros(2, m, 0), torch.ones(2, m, dtype=torch.bool), fg_iou=0.5, bg_iou=0.4,
                          low_quality=policy)
            assert batch.shape == (2, 0) and batch.dtype == torch.long


def test_batched_with_padding_equals_per_image():
    second = torch.tensor([[0.6, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0]])
    batch = torch.zeros(2, 3, 7)
    batch[0] = IOU
    batch[1, :1] = second
    batch[1, 1:] = 0.9  # padding slots with junk IoU must be ignored
    valid = torch.tensor([[True, True, True], [True, False, False]])
    for policy in ("detectron", "any", "none"):
        out = _m(batch, policy, valid)
        assert out == [_m(IOU, policy), _m(second, policy)]


def test_demoted_anchors_are_a_gts_best_below_bg_iou_under_detectron_only():
    """a5 is gt2's best anchor at 0.32 < 0.4: the detectron rule labels it foreground, then background again, and
    reports it (Detectron's fg_inds counted it); a4 (0.45) stays foreground and is not demoted."""
    labels, demoted = match_with_demoted(IOU, fg_iou=0.5, bg_iou=0.4, low_quality="detectron")
    assert labels.tolist() == [0, I, B, B, 1, B, B]
    assert demoted.tolist() == [False, False, False, False, False, True, False]
    for policy in ("any", "none"):
        assert not match_with_demoted(IOU, fg_iou=0.5, bg_iou=0.4, low_quality=policy)[1].any()
    batch = torch.stack([IOU, torch.zeros_like(IOU)])
    _, demoted = match_with_demoted(batch, torch.tensor([[True] * 3, [False] * 3]), fg_iou=0.5, bg_iou=0.4,
                                    low_quality="detectron")
    assert demoted.shape == (2, 7) and demoted[0, 5] and not demoted[1].any()
