"""Image-folder listing: seconds for `nfjobs.data.imagefolder.listing` (scan the class folders, read the trait
table and the split file) of a folder of N images, every process of a sweep pays it once.

It writes N empty `.png` files in 10 class folders plus `traits.csv` (10 columns) and `splits.csv` into a temporary
directory (the listing opens no image), then times the listing (its memo cleared) `--repeats` times.

    uv run python -m bench.imagefolder_listing                   # N = 10,000 and 50,000
"""

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def write_folder(root: Path, n: int) -> None:
    import polars as pl

    paths = [f"class_{i % 10}/{i:07d}.png" for i in range(n)]
    for k in range(10):
        (root / f"class_{k}").mkdir(parents=True)
    for p in paths:
        (root / p).touch()
    labels = np.arange(n) % 10
    pl.DataFrame({"path": paths, **{f"t{k}": (labels == k).astype(np.int8) for k in range(10)}}).write_csv(
        root / "traits.csv")
    pl.DataFrame({"path": paths, "split": np.where(np.arange(n) < 0.9 * n, "train", "val")}).write_csv(
        root / "splits.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from nfjobs.config import DataConfig
    from nfjobs.data import imagefolder

    print(f"{platform.node()}; median of {args.repeats} listings, memo cleared each time")
    print("| images | seconds | images/s |")
    print("|---:|---:|---:|")
    for n in args.n:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "folder"
            write_folder(root, n)
            cfg = DataConfig(name="imagefolder", root=str(root), traits_file="traits.csv", split_file="splits.csv")
            times = []
            for _ in range(args.repeats):
                for memo in (imagefolder.listing, imagefolder._scanned, imagefolder._traits_of):
                    memo.cache_clear()
                t0 = time.perf_counter()
                listed = imagefolder.listing(cfg)
                times.append(time.perf_counter() - t0)
                assert len(listed.paths) == n
            seconds = float(np.median(times))
            print(f"| {n:,} | {seconds:.2f} | {n / seconds:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
