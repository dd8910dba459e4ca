"""Check the COCO 2017 layout the paper scale expects: ``python -m retinanet check-coco --root DIR``.

The paper trains on ``trainval35k`` and ablates on ``minival``; COCO 2017's ``train2017`` and ``val2017`` are the
same images. Nothing is downloaded here: the check says exactly which file or folder is missing and the commands
that get it. Paths default to :class:`retinanet.config.DataConfig`'s (relative to the root unless absolute).

Checked: each image folder exists and holds the split's number of images (an interrupted unzip is caught; COCO
2017's counts unless ``--train-count`` / ``--val-count`` say otherwise, as for the paper rehearsal's tiny copy of the
layout, config/rehearsal.yaml), each annotation file exists and is not empty (it is not parsed: the training file is
450 MB). On success a JSON report
is written (``--out``, atomically) and the exit code is 0; otherwise one ``error:`` line lists every problem.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from retinanet.atomic import write_json
from retinanet.config import DataConfig

DOWNLOAD = "http://images.cocodataset.org"
"""COCO's download server (the files below are the official 2017 release)."""


@dataclass(frozen=True)
class Item:
    """One expected path: what it is, how many images it holds (folders), and the archive that provides it."""

    role: str
    path: str
    images: int | None
    archive: str


def expected(data: DataConfig) -> list[Item]:
    """The four items of a COCO 2017 layout, with the official image counts (train2017: 118,287; val2017: 5,000)."""
    return [
        Item("train images", data.train_images, 118287, "zips/train2017.zip"),
        Item("val images", data.val_images, 5000, "zips/val2017.zip"),
        Item("train annotations", data.train_annotations, None, "annotations/annotations_trainval2017.zip"),
        Item("val annotations", data.val_annotations, None, "annotations/annotations_trainval2017.zip"),
    ]


def _count_images(folder: Path) -> int:
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if e.name.lower().endswith((".jpg", ".jpeg", ".png")))


def check(root: str | Path, data: DataConfig | None = None, *, min_images: dict[str, int] | None = None) -> dict:
    """Inspect the layout under ``root``. Returns ``{"root", "ok", "items": [{role, path, status, ...}],
    "problems": [str], "fix": [shell commands]}``; ``min_images`` overrides the expected counts by role (a
    rehearsal's or a test's tiny layout)."""
    data = data or DataConfig()
    root = Path(root)
    items, problems, archives = [], [], []
    for item in expected(data):
        path = Path(item.path) if os.path.isabs(item.path) else root / item.path
        want = (min_images or {}).get(item.role, item.images)
        record = {"role": item.role, "path": str(path)}
        if item.images is not None:
            if not path.is_dir():
                record["status"] = "missing"
                problems.append(f"{item.role}: folder {path} is missing")
            else:
                n = _count_images(path)
                record["images"] = n
                record["status"] = "ok" if n >= want else "incomplete"
                if n < want:
                    problems.append(f"{item.role}: {path} holds {n} images, expected {want} (interrupted unzip?)")
        elif not path.is_file():
            record["status"] = "missing"
            problems.append(f"{item.role}: file {path} is missing")
        elif path.stat().st_size == 0:
            record["status"] = "empty"
            problems.append(f"{item.role}: file {path} is empty")
        else:
            record["status"] = "ok"
        if record["status"] != "ok" and item.archive not in archives:
            archives.append(item.archive)
        items.append(record)
    fix = [f"mkdir -p {root}"]
    for archive in archives:
        name = archive.rsplit("/", 1)[-1]
        fix.append(f"wget -c {DOWNLOAD}/{archive} -O {root}/{name} && unzip -q -o {root}/{name} -d {root}")
    return {"root": str(root), "ok": not problems, "items": items, "problems": problems,
            "fix": fix if archives else []}


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("check-coco", help="check the COCO 2017 layout of the paper scale", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DataConfig()
    p.add_argument("--root", default=d.root, help="COCO root folder (data.root)")
    p.add_argument("--train-images", default=d.train_images, help="data.train_images, relative to the root")
    p.add_argument("--train-annotations", default=d.train_annotations, help="data.train_annotations")
    p.add_argument("--val-images", default=d.val_images, help="data.val_images")
    p.add_argument("--val-annotations", default=d.val_annotations, help="data.val_annotations")
    p.add_argument("--train-count", type=int, default=None, metavar="N",
                   help="images train2017 must hold (default COCO 2017's 118287)")
    p.add_argument("--val-count", type=int, default=None, metavar="N",
                   help="images val2017 must hold (default COCO 2017's 5000)")
    p.add_argument("--out", default=None, help="write the JSON report here when the layout is complete")
    p.set_defaults(func=_main)


class CocoLayoutError(ValueError):
    """The COCO layout is incomplete (the message lists every problem and the commands that fix them)."""


def _main(args: argparse.Namespace) -> int:
    data = DataConfig(root=args.root, train_images=args.train_images, train_annotations=args.train_annotations,
                      val_images=args.val_images, val_annotations=args.val_annotations)
    counts = {role: n for role, n in (("train images", args.train_count), ("val images", args.val_count))
              if n is not None}
    report = check(args.root, data, min_images=counts)
    for item in report["items"]:
        extra = f" ({item['images']} images)" if "images" in item else ""
        print(f"{item['status']:>10}  {item['role']}: {item['path']}{extra}")
    if not report["ok"]:
        raise CocoLayoutError(f"COCO layout under {args.root} is incomplete: {'; '.join(report['problems'])}. "
                              f"To get it: {' ; '.join(report['fix'])}")
    if args.out:
        write_json(args.out, report)
    print(f"check-coco: {args.root} is complete")
    return 0
