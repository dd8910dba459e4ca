"""Fetch torchvision's ImageNet-1k ResNet weights once into a cache, verified against their published hash.

torchvision publishes each weights file under a name that ends in the first hex digits of its SHA-256
(``resnet50-0676ba61.pth``); ``torch.hub`` checks downloads the same way. This script downloads to a temporary
file beside the target, checks the prefix, and only then renames it into place, so the cache never holds a partial
or corrupt file.

    python workflow/scripts/fetch_weights.py --depth 50 --out work/weights/resnet50-imagenet1k-v1.pth
    python workflow/scripts/fetch_weights.py --url file:///path/resnet50-0676ba61.pth --out ...   (tests, mirrors)
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
import urllib.request
from pathlib import Path

from retinanet import atomic


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


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, out: str | Path) -> str:
    """Download ``url`` (http(s) or file://) to ``out`` atomically after checking its hash prefix; return the
    full SHA-256."""
    prefix = hash_prefix(url)
    with atomic.atomic_path(out) as tmp:
        with open(tmp, "wb") as dst, urllib.request.urlopen(url, timeout=60) as src:  # noqa: S310
            shutil.copyfileobj(src, dst)
        digest = sha256(tmp)
        if not digest.startswith(prefix):
            raise WeightsError(f"{url}: SHA-256 {digest[:16]}... does not start with the published {prefix}")
    return digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--depth", type=int, help="ResNet depth: torchvision's published IMAGENET1K_V1 weights")
    src.add_argument("--url", help="explicit URL whose file name carries the hash prefix (mirror, file://)")
    parser.add_argument("--out", required=True, help="cache file to write")
    args = parser.parse_args(argv)
    try:
        url = args.url or published_url(args.depth)
        digest = fetch(url, args.out)
    except (WeightsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {url} sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
