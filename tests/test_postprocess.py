import torch
from torchvision.ops import batched_nms

from retinanet.config import AnchorConfig, TestConfig
from retinanet.modeling import boxes as box_ops
from retinanet.modeling.anchors import build_anchor_generator as AnchorGenerator  # the generator of an AnchorConfig
from retinanet.modeling.anchors import feature_shapes
from retinanet.modeling.postprocess import postprocess


def _reference(logits, deltas, anchors, level_sizes, image_sizes, cfg):
    """Straightforward per-image, per-level implementation of section 4 'Inference' (Detectron's order)."""
    out = []
    k = logits.shape[-1]
    for i, (h, w) in enumerate(image_sizes):
        all_b, all_s, all_l = [], [], []
        start = 0
        for level, size in enumerate(level_sizes):
            s = logits[i, start:start + size].sigmoid().flatten()
            thresh = cfg.score_thresh_p7 if level == 4 and cfg.score_thresh_p7 is not None else cfg.score_thresh
            cand = torch.nonzero(s > thresh).flatten()
            cand = cand[s[cand].argsort(descending=True)[: cfg.topk_per_level]]
            a = start + cand // k
            b = box_ops.clip(box_ops.decode(deltas[i, a], anchors[a]), h, w)
            all_b.append(b)
            all_s.append(s[cand])
            all_l.append(cand % k)
            start += size
        b, s, lab = torch.cat(all_b), torch.cat(all_s), torch.cat(all_l)
        keep = batched_nms(b, s, lab, cfg.nms_thresh)[: cfg.detections_per_image]
        out.append({"boxes": b[keep], "scores": s[keep], "labels": lab[keep]})
    return out


def _inputs(n=3, k=5, hw=(256, 320), seed=0, scale=3.0):
    gen = AnchorGenerator(AnchorConfig())
    shapes = feature_shapes(*hw)
    anchors = gen(shapes)
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, anchors.shape[0], k, generator=g) * scale - 4
    deltas = torch.randn(n, anchors.shape[0], 4, generator=g) * 0.2
    return logits, deltas, anchors, gen.level_sizes(shapes)


def test_batched_postprocess_equals_per_image_reference():
    logits, deltas, anchors, sizes = _inputs()
    image_sizes = [(256, 320), (200, 300), (256, 180)]
    for cfg in (TestConfig(), TestConfig(score_thresh_p7=0.0, topk_per_level=50, detections_per_image=30)):
        ours = postprocess(logits, deltas, anchors, sizes, image_sizes, cfg)
        ref = _reference(logits, deltas, anchors, sizes, image_sizes, cfg)
        for o, r in zip(ours, ref, strict=True):
            torch.testing.assert_close(o["scores"], r["scores"])
            torch.testing.assert_close(o["boxes"], r["boxes"])
            assert torch.equal(o["labels"], r["labels"])


def test_at_most_100_detections_above_threshold_sorted_and_clipped():
    logits, deltas, anchors, sizes = _inputs(scale=6.0)
    image_sizes = [(256, 320)] * 3
    for det in postprocess(logits, deltas, anchors, sizes, image_sizes, TestConfig()):
        assert 0 < len(det["scores"]) <= 100
        assert (det["scores"] > 0.05).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
        assert (det["boxes"] >= 0).all() and (det["boxes"][:, 2] <= 320).all() and (det["boxes"][:, 3] <= 256).all()
        assert det["labels"].dtype == torch.int64 and det["labels"].max() < 5


def test_single_confident_anchor_gives_its_box():
    logits, deltas, anchors, sizes = _inputs(n=2)
    logits.fill_(-20.0)
    deltas.zero_()
    logits[1, 1234, 3] = 5.0
    dets = postprocess(logits, deltas, anchors, sizes, [(256, 320)] * 2, TestConfig())
    assert len(dets[0]["scores"]) == 0
    assert dets[1]["labels"].tolist() == [3]
    torch.testing.assert_close(dets[1]["boxes"][0], box_ops.clip(anchors[1234], 256, 320))
