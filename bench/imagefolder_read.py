"""Image-folder reading: images/s decoded and resized by `nfjobs.data.iter_batches` at several worker counts,
side by side in one run (ratio to 0 workers = decoding in the calling process).

It writes its own folder of JPEG images (smooth colour fields plus noise, as photographs compress) into a
temporary directory, reads it once to warm the page cache, then times each worker count over the whole folder.

    uv run python -m bench.imagefolder_read                       # 256 images 320x240 -> 224, workers 0 1 2
    uv run python -m bench.imagefolder_read --n 4096 --workers 0 4 8 16
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def write_folder(root: Path, n: int, width: int, height: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        a, b, c = rng.uniform(0, 0.05, 3)
        field = np.stack([np.sin(a * xs + b * ys + k * c * 40) for k in range(3)], -1) * 100 + 128
        image = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        path = root / f"class_{i % 10}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()

    from nfjobs.config import DataConfig
    from nfjobs.data import iter_batches

    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp), args.n, args.width, args.height)
        base = DataConfig(name="imagefolder", root=tmp, image_size=args.size, val_frac=0.0, workers=0)
        sum(len(b[0]) for b in iter_batches(base, "train", args.batch))  # page cache and listing warm
        rows = []
        for workers in args.workers:
            cfg = DataConfig(**{**base.__dict__, "workers": workers})
            start = time.perf_counter()
            n = sum(len(images) for images, _, _ in iter_batches(cfg, "train", args.batch))
            rows.append((workers, n / (time.perf_counter() - start)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.n} JPEG {args.width}x{args.height} -> {args.size}x{args.size}, batch {args.batch}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}")
    print("| workers | images/s | vs 0 workers |")
    print("|---|---|---|")
    for workers, rate in rows:
        print(f"| {workers} | {rate:.0f} | {rate / rows[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
