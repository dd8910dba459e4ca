"""Fetch ImageNet-1k ResNet weights once into a cache: Detectron's MSRA ones (converted), or torchvision's.

``--source msra`` (the paper scale): the ResNets the paper fine-tuned, Detectron's Caffe2 pickles
``https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-50.pkl`` and ``R-101.pkl`` (detectron2's
``ImageNetPretrained/MSRA`` copies hold the same blobs). Detectron publishes no checksum, so the pickle is checked
blob by blob instead (every name and shape of an MSRA ResNet-50/101, nothing else) and converted for
``model.backbone_style: caffe2`` (:mod:`retinanet.tools.caffe2_weights`); the log records its SHA-256.

``--source torchvision``: torchvision publishes each weights file under a name that ends in the first hex digits
of its SHA-256 (``resnet50-0676ba61.pth``); ``torch.hub`` checks downloads the same way, and so does this script.

Either way the file is written to a temporary file beside the target and only then renamed into place, so the
cache never holds a partial or corrupt file.

    python workflow/scripts/fetch_weights.py --source msra --depth 50 --out work/weights/resnet50-msra.pth
    python workflow/scripts/fetch_weights.py --source msra --url file:///path/R-50.pkl --out ...   (no network)
    python workflow/scripts/fetch_weights.py --source msra --depth 101 --url file:///mirror/R-101.pkl --out ...
    python workflow/scripts/fetch_weights.py --depth 50 --out work/weights/resnet50-imagenet1k-v1.pth
    python workflow/scripts/fetch_weights.py --url file:///path/resnet50-0676ba61.pth --out ...   (tests, mirrors)
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from retinanet import atomic
from retinanet.rundir.identity import sha256_file
from retinanet.tools import caffe2_weights


class WeightsError(ValueError):
    """A weights file is missing, unnamed by its hash, or fails verification."""


def published_url(depth: int) -> str:
    """torchvision's URL of ``ResNet{depth}_Weights.IMAGENET1K_V1`` (the weights the paper's ResNets correspond to)."""
    import torchvision.models as tvm

    name = f"ResNet{depth}_Weights"
    if not hasattr(tvm, name):
        raise WeightsError(f"--depth: torchvision has no {name} (use 18, 34, 50, 101 or 152)")
    return getattr(tvm, name).IMAGENET1K_V1.url


def hash_prefix(url: str) -> str:
    """The SHA-256 prefix in a torchvision file name: ``.../resnet50-0676ba61.pth`` -> ``0676ba61``."""
    match = re.search(r"-([a-f0-9]{6,})\.[A-Za-z0-9]+$", url.rsplit("/", 1)[-1])
    if not match:
        raise WeightsError(f"{url}: the file name carries no SHA-256 prefix (expected NAME-<hex>.pth)")
    return match.group(1)


def fetch(url: str, out: str | Path) -> str:
    """Download ``url`` (http(s) or file://) to ``out`` atomically after checking its hash prefix; return the
    full SHA-256."""
    prefix = hash_prefix(url)
    with atomic.atomic_path(out) as tmp:
        with open(tmp, "wb") as dst, urllib.request.urlopen(url, timeout=60) as src:  # noqa: S310
            shutil.copyfileobj(src, dst)
        digest = sha256_file(tmp)
        if not digest.startswith(prefix):
            raise WeightsError(f"{url}: SHA-256 {digest[:16]}... does not start with the published {prefix}")
    return digest


def fetch_msra(url: str, out: str | Path, depth: int | None = None) -> str:
    """Download Detectron's MSRA ``R-<depth>.pkl`` from ``url`` (http(s) or file://), convert it
    (:func:`retinanet.tools.caffe2_weights.convert_file`: every blob checked by name and shape, ``depth`` None: from the
    blobs) and write ``out`` atomically; return the pickle's SHA-256."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        pkl = Path(tmp) / url.rsplit("/", 1)[-1]
        with open(pkl, "wb") as dst, urllib.request.urlopen(url, timeout=60) as src:  # noqa: S310
            shutil.copyfileobj(src, dst)
        return caffe2_weights.convert_file(pkl, out, depth)["sha256"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("torchvision", "msra"), default="torchvision",
                        help="torchvision's IMAGENET1K_V1 weights, or Detectron's MSRA R-<depth>.pkl, converted")
    parser.add_argument("--depth", type=int, help="ResNet depth: the source's published weights; with --url and "
                        "msra, the depth its blobs must have")
    parser.add_argument("--url", help="explicit URL (mirror, file://); torchvision: its file name carries the hash "
                        "prefix; msra: the depth comes from the blobs (checked against --depth if given)")
    parser.add_argument("--out", required=True, help="cache file to write")
    args = parser.parse_args(argv)
    if args.depth is None and not args.url:
        parser.error("one of --depth or --url is required")
    try:
        if args.source == "msra":
            url = args.url or caffe2_weights.URL.format(depth=args.depth)
            digest = fetch_msra(url, args.out, args.depth)
        else:
            url = args.url or published_url(args.depth)
            digest = fetch(url, args.out)
    except (WeightsError, caffe2_weights.Caffe2WeightsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {url} sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
