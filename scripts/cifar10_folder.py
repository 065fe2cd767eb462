"""Write CIFAR-10's python batches as an image folder with class-membership traits, for the prototype protocol.

    uv run python scripts/cifar10_folder.py --root /data/cifar --out /data/cifar10_folder [--workers 16]

`<out>/<class>/<index:05d>.png` for the training images (index = position in data_batch_1..5) and
`<out>/<class>/test_<index:05d>.png` for `test_batch` when the root has it; `traits.csv` (path, one 0/1 column
per class: CIFAR-10's labels as 10 one-hot traits) and `splits.csv` (path, split). The split is the one every
CIFAR-10 job uses (`DataConfig.val_frac`, default 0.1): the first 45,000 training images are `train`, the last
5,000 `val` (never seen by a field trained with that default, never used to choose a prototype), and
`test_batch` is `test`. PNG is lossless, so the folder reads back equal to the batches (tested).
Batches are read by the project's safe unpickler; class names from `batches.meta` must be plain folder names.
"""

import argparse
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _save(args: tuple[Path, np.ndarray]) -> None:
    from PIL import Image

    path, image = args
    tmp = path.with_suffix(".tmp")
    Image.fromarray(image).save(tmp, format="PNG")
    tmp.replace(path)


def write(root: str, out: Path, val_frac: float = 0.1, workers: int = 0) -> dict[str, int]:
    """The folder under `out` (made); returns images per split."""
    import polars as pl

    from nfjobs.data import cifar10

    if not 0.0 <= val_frac < 1.0:  # NaN fails too
        raise ValueError(f"--val-frac: expected a number in [0, 1), got {val_frac}")
    if workers < 0:
        raise ValueError(f"--workers: expected a whole number >= 0, got {workers}")
    images, labels, names = cifar10.load_train(root)
    bad = [n for n in names if not SAFE_NAME.fullmatch(n) or n in ("path", "split")]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"{root}: batches.meta label_names must be distinct plain folder names; got {bad or names}")
    n_val = int(round(len(images) * val_frac))
    split = ["train"] * (len(images) - n_val) + ["val"] * n_val
    paths = [f"{names[y]}/{i:05d}.png" for i, y in enumerate(labels)]
    if cifar10.check_root(root, test=True) is None:
        test_images, test_labels, _ = cifar10.load_test(root)
        images, labels = np.concatenate([images, test_images]), np.concatenate([labels, test_labels])
        paths += [f"{names[y]}/test_{i:05d}.png" for i, y in enumerate(test_labels)]
        split += ["test"] * len(test_labels)
    out = Path(out)
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)
    jobs = ((out / p, im) for p, im in zip(paths, images))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_save, jobs, chunksize=512))
    else:
        for job in jobs:
            _save(job)
    onehot = np.eye(len(names), dtype=np.int8)[labels]
    pl.DataFrame({"path": paths, **{n: onehot[:, c] for c, n in enumerate(names)}}).write_csv(out / "traits.csv")
    pl.DataFrame({"path": paths, "split": split}).write_csv(out / "splits.csv")
    return {s: split.count(s) for s in ("train", "val", "test")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="directory holding cifar-10-batches-py/")
    parser.add_argument("--out", required=True, type=Path, help="folder to write (made if missing)")
    parser.add_argument("--val-frac", type=float, default=0.1, help="held-out tail of the training images")
    parser.add_argument("--workers", type=int, default=0, help="processes encoding PNGs (0 = this one)")
    args = parser.parse_args(argv)
    try:
        counts = write(args.root, args.out, args.val_frac, args.workers)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
