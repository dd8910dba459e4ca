import torch
from tiny_coco import tiny_config, write_coco
from torchvision.ops import box_iou

from retinanet.anchor_stats import anchor_statistics
from retinanet.anchors import AnchorGenerator, feature_shapes
from retinanet.data import build_dataset


def test_counts_add_up_and_match_a_direct_computation(tmp_path):
    write_coco(tmp_path, num_images=3, seed=1)
    cfg = tiny_config(tmp_path)
    stats = anchor_statistics(cfg)
    assert stats["images"] == 3
    assert stats["foreground"] + stats["ignored"] + stats["background"] == stats["anchors"]
    # Direct count: with the 'none' policy an anchor is fg iff its best IoU >= 0.5.
    cfg.matcher.low_quality = "none"
    stats = anchor_statistics(cfg)
    anchors = AnchorGenerator(cfg.anchors)(feature_shapes(64, 64))
    dataset = build_dataset(cfg.data, train=False)
    fg = objects = missed = 0
    for i in range(len(dataset)):
        boxes = dataset[i][1]["boxes"]
        iou = box_iou(boxes, anchors)
        fg += int((iou.max(0).values >= 0.5).sum())
        objects += len(boxes)
        best_gt = iou.argmax(0)
        hit = torch.zeros(len(boxes), dtype=torch.bool)
        hit[best_gt[iou.max(0).values >= 0.5]] = True
        missed += int((~hit).sum())
    assert stats["anchors"] == 3 * anchors.shape[0]
    assert (stats["foreground"], stats["objects"], stats["objects_without_foreground"]) == (fg, objects, missed)
    assert stats["foreground_fraction"] == fg / stats["anchors"]
