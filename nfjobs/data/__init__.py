"""Datasets: images are uint8 (N, H, W, 3), labels int64 (N,), traits bool (N, T).

`load_split` loads a split into memory (CIFAR-10 is 150 MB), moved to the device by the job; augmentation
happens there, not per sample. `open_split` streams one instead: labels and traits at once, images in batches
(an image folder decodes them in DataLoader workers), so a cache of a folder larger than memory can be written.

Splits: `train`; `val`, held out of the training images (CUB: the official test split); `test`, CIFAR-10's
official `test_batch`, CUB's official test split or an image folder's `test` images (builtin has none).
"""

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from jaxtyping import Bool, Int, UInt8

from nfjobs.config import DataConfig


@dataclass(frozen=True)
class Split:
    images: UInt8[np.ndarray, "N H W 3"]
    labels: Int[np.ndarray, " N"]
    traits: Bool[np.ndarray, "N T"] | None
    class_names: tuple[str, ...]
    trait_names: tuple[str, ...] = ()


SplitName = Literal["train", "val", "test"]


def check(cfg: DataConfig, prefix: str = "data", splits: Sequence[str] = ("train", "val")) -> list[tuple[str, str]]:
    """Pre-submission problems with `cfg` and the `splits` a cell reads as `(dotted key, message)` pairs; empty
    when fine (a new list each call; the file-system checks behind it are memoised, since a sweep asks once per
    cell)."""
    return list(_check(cfg, prefix, tuple(splits)))


@functools.lru_cache(maxsize=1024)
def _check(cfg: DataConfig, prefix: str, splits: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    if cfg.name == "builtin" and "test" in splits:
        return ((f"{prefix}.name", "the builtin dataset has train and val splits only, no test"),)
    if cfg.name == "cifar10":
        from nfjobs.data.cifar10 import check_root

        problem = check_root(cfg.root, test="test" in splits)
        if problem:
            return ((f"{prefix}.root", f"CIFAR-10 root {problem}"),)
    if cfg.name == "imagefolder":
        from nfjobs.data import imagefolder

        problem = imagefolder.check(cfg, splits)
        return ((f"{prefix}.{problem[0]}", f"image folder: {problem[1]}"),) if problem else ()
    if cfg.name == "cub":
        from nfjobs.data.cub import check_root as check_cub

        problem = check_cub(cfg.root)
        return ((f"{prefix}.root", f"CUB-200-2011 root {problem}"),) if problem else ()
    for split in splits:  # builtin and CIFAR-10: the held-out validation split is cut by val_frac
        if split in ("train", "val") and not split_size(cfg, split):
            n = _n_train_images(cfg)
            if split == "val":
                return ((f"{prefix}.val_frac", f"the 'val' split would have no images (round({n} x val_frac = "
                                               f"{cfg.val_frac}) = 0); this cell reads validation images: "
                                               "expected val_frac > 0"),)
            return ((f"{prefix}.val_frac", f"the 'train' split would have no images ({n} images, val_frac = "
                                           f"{cfg.val_frac} held out)"),)
    return ()


CIFAR10_SIZES = {"train": 50_000, "test": 10_000}


def _n_train_images(cfg: DataConfig) -> int:
    return cfg.builtin_n if cfg.name == "builtin" else CIFAR10_SIZES["train"]


def split_size(cfg: DataConfig, split: str) -> int | None:
    """Images in `split`, known without reading any image (None where only reading the dataset's annotations
    would tell: CUB). An image folder is scanned (memoised); call `check` first."""
    if cfg.name in ("builtin", "cifar10"):
        if split == "test":
            return 0 if cfg.name == "builtin" else CIFAR10_SIZES["test"]
        s = _hold_out(_n_train_images(cfg), cfg, split)
        return max(0, s.stop - s.start)
    if cfg.name == "imagefolder":
        from nfjobs.data import imagefolder

        return len(imagefolder.split_ids(cfg, split))
    return None


def _hold_out(n: int, cfg: DataConfig, split: str) -> slice:
    n_val = int(round(n * cfg.val_frac))
    if split == "val":
        return slice(n - n_val, n)
    stop = n - n_val if cfg.n_train == 0 else min(cfg.n_train, n - n_val)
    return slice(0, stop)


def load_split(cfg: DataConfig, split: SplitName) -> Split:
    """The training images (minus the held-out tail), the held-out validation images or the test images, in
    memory."""
    if split == "test" and cfg.name == "builtin":
        raise ValueError("the builtin dataset has train and val splits only, no test")
    if cfg.name == "builtin":
        from nfjobs.data import builtin

        data = builtin.generate(cfg.builtin_n, cfg.builtin_seed)
        s = _hold_out(cfg.builtin_n, cfg, split)
        return Split(data.images[s], data.labels[s], data.traits[s], data.class_names, data.trait_names)
    if cfg.name == "cifar10":
        from nfjobs.data import cifar10

        if split == "test":
            images, labels, names = cifar10.load_test(cfg.root)
            return Split(images, labels, None, names)
        images, labels, names = cifar10.load_train(cfg.root)
        s = _hold_out(len(images), cfg, split)
        return Split(images[s], labels[s], None, names)
    if cfg.name == "cub":
        from nfjobs.data import cub

        return cub.load_split(cfg, "val" if split == "test" else split)
    if cfg.name == "imagefolder":
        reader = open_split(cfg, split)
        ids = range(reader.n)
        images = np.concatenate(list(reader.batches(ids, 256))) if reader.n else np.zeros((0, 0, 0, 3), np.uint8)
        return Split(images, reader.labels, reader.traits, reader.class_names, reader.trait_names)
    raise ValueError(f"unknown dataset {cfg.name!r}")


@dataclass(frozen=True)
class SplitReader:
    """One split without its pixels in memory: labels and traits now, images in batches by `batches`."""

    cfg: DataConfig
    split: str
    labels: Int[np.ndarray, " N"]
    traits: Bool[np.ndarray, "N T"] | None
    class_names: tuple[str, ...]
    trait_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    _images: UInt8[np.ndarray, "N H W 3"] | None = None
    """The whole split, for datasets read into memory anyway."""
    _folder_ids: Int[np.ndarray, " N"] | None = None
    """Image-folder datasets: folder index of every image of the split."""

    @property
    def n(self) -> int:
        return len(self.labels)

    def batches(self, ids: Sequence[int], batch_size: int) -> Iterator[UInt8[np.ndarray, "B H W 3"]]:
        """Images `ids` (split indices), in that order, `batch_size` at a time."""
        ids = np.asarray(ids, np.int64)
        if self._images is not None:
            for s in range(0, len(ids), batch_size):
                yield self._images[ids[s : s + batch_size]]
            return
        from nfjobs.data import imagefolder

        yield from imagefolder.iter_images(self.cfg, self._folder_ids[ids], batch_size)


def open_split(cfg: DataConfig, split: SplitName) -> SplitReader:
    """A split to stream: an image folder decodes images only when `batches` asks for them; the other datasets
    are read into memory (they fit) and sliced."""
    if cfg.name != "imagefolder":
        s = load_split(cfg, split)
        return SplitReader(cfg, split, s.labels, s.traits, s.class_names, s.trait_names,
                           tuple(s.images.shape[1:]), _images=s.images)
    from nfjobs.data import imagefolder

    lst = imagefolder.listing(cfg)
    ids = imagefolder.split_ids(cfg, split)
    return SplitReader(cfg, split, lst.labels[ids], None if lst.traits is None else lst.traits[ids],
                       lst.class_names, lst.trait_names, (cfg.image_size, cfg.image_size, 3), _folder_ids=ids)


def iter_batches(cfg: DataConfig, split: SplitName, batch_size: int) -> Iterator[
        tuple[UInt8[np.ndarray, "B H W 3"], Int[np.ndarray, " B"], Bool[np.ndarray, "B T"] | None]]:
    """(images, labels, traits) of `split` in order, `batch_size` images at a time, never all in memory for an
    image folder."""
    reader = open_split(cfg, split)
    start = 0
    for images in reader.batches(range(reader.n), batch_size):
        stop = start + len(images)
        yield images, reader.labels[start:stop], None if reader.traits is None else reader.traits[start:stop]
        start = stop
