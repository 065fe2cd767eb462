"""Small datasets written in their official on-disk layouts (importable from tests: conftest puts tests/ on the
path)."""

import pickle
from pathlib import Path

import numpy as np

from nfjobs.data import cifar10

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_cifar(root: Path, n_per_batch: int = 6, n_test: int = 8, seed: int = 0, test: bool = True) -> Path:
    """`root/cifar-10-batches-py/` with five training batches, `batches.meta` and (if `test`) `test_batch`, as
    the official files lay them out (dicts of `data` uint8 (N, 3072) in CHW order and `labels` lists); returns
    `root`."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / cifar10.FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = [*cifar10.TRAIN_FILES, *((cifar10.TEST_FILE,) if test else ())]
    for name in names:
        n = n_test if name == cifar10.TEST_FILE else n_per_batch
        batch = {"batch_label": name, "labels": rng.integers(0, 10, n).tolist(),
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "filenames": [f"{name}_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": list(CLASSES), "num_cases_per_batch": n_per_batch, "num_vis": 3072}
    (folder / cifar10.META_FILE).write_bytes(pickle.dumps(meta, protocol=2))
    return Path(root)


def write_png_folder(root: Path, images: np.ndarray, labels: np.ndarray, class_names, start: int = 0) -> list[str]:
    """uint8 images (N, H, W, 3) as `root/<class>/<start + i:05d>.png`; returns their paths relative to `root` in
    index order (zero-padded names keep folder order = index order within a class)."""
    from PIL import Image

    paths = []
    for i, (image, label) in enumerate(zip(images, labels), start):
        rel = f"{class_names[label]}/{i:05d}.png"
        (Path(root) / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(Path(root) / rel)
        paths.append(rel)
    return paths


def write_trait_folder(root: Path, n: int = 48, size: int = 32, seed: int = 0) -> Path:
    """An image folder with learnable traits: three classes of noisy images whose traits (`red`, `bright`,
    `striped`) are drawn into the pixels, plus `traits.csv` and `splits.csv` (train / val / test by position)."""
    import polars as pl

    rng = np.random.default_rng(seed)
    red, bright, striped = rng.random(n) < 0.4, rng.random(n) < 0.5, rng.random(n) < 0.3
    images = rng.integers(0, 60, (n, size, size, 3)).astype(np.int64)
    images[red, :, :, 0] += 150
    images[bright] += 60
    images[striped, ::4] = 255
    labels = np.arange(n) % 3
    paths = write_png_folder(root, np.clip(images, 0, 255).astype(np.uint8), labels, ("a", "b", "c"))
    pl.DataFrame({"path": paths, "red": red, "bright": bright.astype(int), "striped": striped.astype(int)}).write_csv(
        Path(root) / "traits.csv")
    split = ["test" if i % 4 == 0 else "val" if i % 4 == 1 else "train" for i in range(n)]
    pl.DataFrame({"path": paths, "split": split}).write_csv(Path(root) / "splits.csv")
    return Path(root)
