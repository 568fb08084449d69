"""Cut a smaller cifar10-jpeg.zip (the first N training and M test images of each class,
stored as they are) for a device check: the full zip (59 MiB) and the checkout exceed what
travels to a lent GPU machine (64 MiB).

    python tools/cifar_subset.py --out .data/cifar10-subset --train 2000 --test 500

Reads ``$FITNETS_DATA/cifar10-jpeg.zip``; writes ``OUT/cifar10-jpeg.zip`` (``.data/`` is
git-ignored: name it in the device tool's carry) and prints its size.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from collections import Counter
from pathlib import Path


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(".data/cifar10-subset"))
    ap.add_argument("--train", type=int, default=2000, help="training images per class")
    ap.add_argument("--test", type=int, default=500, help="test images per class")
    ap.add_argument("--source", type=Path, help="default: $FITNETS_DATA/cifar10-jpeg.zip")
    a = ap.parse_args(argv)
    source = a.source or Path(os.environ.get("FITNETS_DATA", ".")) / "cifar10-jpeg.zip"
    if not source.is_file():
        sys.exit(f"no {source}: set FITNETS_DATA to the folder holding cifar10-jpeg.zip")
    a.out.mkdir(parents=True, exist_ok=True)
    target = a.out / "cifar10-jpeg.zip"
    keep = {"train": a.train, "test": a.test}
    taken: Counter = Counter()
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
        for info in sorted(src.infolist(), key=lambda i: i.filename):
            parts = info.filename.split("/")
            if info.is_dir() or len(parts) != 3 or parts[0] not in keep:
                continue
            key = (parts[0], parts[1])
            if taken[key] < keep[parts[0]]:
                taken[key] += 1
                dst.writestr(info, src.read(info))
    print(f"wrote {target}: {sum(taken.values())} images, "
          f"{target.stat().st_size / 2**20:.1f} MiB")
    return target


if __name__ == "__main__":
    main()
