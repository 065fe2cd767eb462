"""Any directory of images in torchvision's ImageFolder layout: `<root>/<class>/**/<image>`.

Classes are the sub-folders of `root` in sorted order; images are the files below them with an image suffix,
in sorted path order (symbolic links leading out of `root` are skipped). Optional tables inside `root` (CSV or
parquet, read with polars) refer to images by their path relative to `root`:

- `traits_file`: a `path` column and one 0/1 (or boolean) column per trait; it must list every image used;
- `split_file`: `path` and `split` (`train`, `val`, `test`) columns; images it does not list are not used.

A table row naming an absolute path, a `..` component or a file that is not an image of the folder is refused:
the tables are inputs and may not point outside `root`. Nothing is read through a symbolic link that leads out of
`root` (a table that is such a link is refused before it is opened, and an image's link is checked again when it
is decoded); a link that loops is refused in one line. Without a split file the images are split at random
(seed `split_seed`): `test_frac` of them in `test`, `val_frac` in `val`, the rest in `train`. `n_train` keeps a
seeded subset of the training images. All indices are in folder order.

Images are decoded and resized (bilinear, to `image_size` squared) as they are read, in batches, by a torch
DataLoader with `workers` processes: a split is never held in memory whole unless a job asks for it. An image is
decoded only if its header claims at most `MAX_PIXELS` pixels (a small file may claim a huge image: a
decompression bomb); an image that cannot be decoded (truncated, corrupt, too large) fails the cell with an
`ImageError` naming the file relative to `root`.
"""

import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from jaxtyping import Bool, Int, UInt8

from nfjobs.config import DataConfig

MAX_PIXELS = 1 << 26
"""Most pixels (width x height, about 67 million: 8192 x 8192) an image may claim to be decoded."""
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
SPLITS = ("train", "val", "test")


class FolderError(ValueError):
    """A problem with the folder or one of its tables; `key` is the DataConfig field to blame."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class ImageError(ValueError):
    """An image of the folder that cannot be decoded; the message names it relative to `root`."""


def _real(path: str | Path, shown: str, key: str) -> Path | None:
    """`path` with every symbolic link followed; None when it (or a link's target) does not exist; FolderError
    naming `key` and `shown` (the path relative to root) when a link loops."""
    try:
        return Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:
        return None
    except (OSError, RuntimeError) as err:  # ELOOP
        raise FolderError(key, f"{shown!r} cannot be followed ({_reason(err)}): a symbolic link loop?") from None


def _resolves_inside(path: str | Path, real_root: Path, shown: str, key: str) -> Path:
    """`path` with every symbolic link followed, refused (FolderError naming `key` and `shown`) when it does not
    exist, loops or leads out of `real_root`. Nothing of the file is read."""
    real = _real(path, shown, key)
    if real is None:
        raise FolderError(key, f"{shown!r} does not exist inside root (a broken link?)")
    if not real.is_relative_to(real_root):
        raise FolderError(key, f"{shown!r} is a symbolic link leading out of root; files are read only inside "
                               "root")
    return real


def _reason(err: BaseException) -> str:
    """An OS error's reason without the paths it quotes."""
    return getattr(err, "strerror", None) or type(err).__name__


@dataclass(frozen=True)
class Listing:
    """Every image of the folder with its class, traits and split (no pixels)."""

    paths: tuple[str, ...]
    """POSIX paths relative to the root."""
    labels: Int[np.ndarray, " N"]
    traits: Bool[np.ndarray, "N T"] | None
    split: tuple[str, ...]
    """`train`, `val`, `test` or `` (not used) per image."""
    class_names: tuple[str, ...]
    trait_names: tuple[str, ...]


def _scan(root: Path) -> tuple[list[str], list[int], tuple[str, ...]]:
    """Images under the class folders, in each class sorted as paths (part by part). Linked files and class
    folders are kept only when they resolve inside the root; linked sub-folders are not entered. (`os.walk` and
    string checks, not `Path.rglob` + a `resolve()` per file: 50,000 files took 8 s that way.)"""
    real_root = root.resolve()

    def linked_inside(path: Path, shown: str) -> bool:  # a broken link or one leading out is skipped
        real = _real(path, shown, "root")
        return real is not None and real.is_relative_to(real_root)

    def class_folder(d: Path) -> bool:  # a link that loops is no folder (a table link that loops is refused
        if d.name.startswith("."):     # when the table is read)
            return False
        if d.is_symlink():
            try:
                return linked_inside(d, d.name) and d.is_dir()
            except FolderError:
                return False
        return d.is_dir()

    classes = tuple(sorted(d.name for d in root.iterdir() if class_folder(d)))
    paths, labels = [], []
    for label, name in enumerate(classes):
        top = root / name
        found = []
        for folder, _, files in os.walk(top):
            rel = Path(folder).relative_to(root).as_posix()
            for file in files:
                if os.path.splitext(file)[1].lower() not in SUFFIXES:
                    continue
                full = os.path.join(folder, file)
                if os.path.islink(full) and not linked_inside(Path(full), f"{rel}/{file}"):
                    continue
                if os.path.isfile(full):
                    found.append(f"{rel}/{file}")
        found.sort(key=lambda p: p.split("/"))
        paths += found
        labels += [label] * len(found)
    return paths, labels, classes


def inside(root: Path, relative: str, key: str) -> Path:
    """`root / relative`, refusing absolute paths and `..` components."""
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or ".." in pure.parts or "\\" in relative or ":" in pure.parts[0]:
        raise FolderError(key, f"{relative!r} must be a path relative to root {root} without '..'")
    return root / pure


def _read_table(root: Path, name: str, key: str):
    """The table `name` (relative to root), read only if it resolves to a regular file inside root."""
    import polars as pl

    path = inside(root, name, key)
    if not os.path.lexists(path):
        raise FolderError(key, f"{path} does not exist (a CSV or parquet file inside root)")
    real = _resolves_inside(path, root.resolve(), name, key)
    if not real.is_file():
        raise FolderError(key, f"{path} is not a regular file (a CSV or parquet file inside root)")
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise FolderError(key, f"{path}: expected a .csv or .parquet file")
    try:
        if path.suffix.lower() == ".parquet":
            return path, pl.read_parquet(real)
        return path, pl.read_csv(real)
    except Exception as err:  # polars raises several error types for unreadable files
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise FolderError(key, f"{path} cannot be read as a table: {reason}") from None


def _rows(root: Path, table, file: Path, key: str, index: dict[str, int]) -> np.ndarray:
    """Image index of every row of `table`'s `path` column; refuses paths outside root and unknown images."""
    if "path" not in table.columns:
        raise FolderError(key, f"{file} has no 'path' column (columns: {', '.join(table.columns)})")
    rows = []
    for value in table["path"].cast(str).to_list():
        if value is None:
            raise FolderError(key, f"{file}: a row has an empty path")
        if value in index:  # the scan's own relative paths: inside the root by construction
            rows.append(index[value])
            continue
        inside(root, value, key)
        norm = PurePosixPath(value).as_posix()
        if norm not in index:
            raise FolderError(key, f"{file}: {value!r} is not an image in a class folder of {root}")
        rows.append(index[norm])
    rows = np.asarray(rows, np.int64)
    if len(np.unique(rows)) != len(rows):
        raise FolderError(key, f"{file} lists an image more than once")
    return rows


def _traits(root: Path, traits_file: str, index: dict[str, int]) -> tuple[np.ndarray, tuple[str, ...]]:
    import polars as pl

    file, table = _read_table(root, traits_file, "traits_file")
    rows = _rows(root, table, file, "traits_file", index)
    names = tuple(c for c in table.columns if c != "path")
    if not names:
        raise FolderError("traits_file", f"{file} has no trait columns beside 'path'")
    traits = np.zeros((len(index), len(names)), bool)
    for j, name in enumerate(names):
        col = table[name]
        ok = col.dtype == pl.Boolean or (col.dtype.is_integer() and col.is_in([0, 1]).all())
        if not ok or col.null_count():
            raise FolderError("traits_file", f"{file}: column {name!r} must hold only 0/1 or true/false")
        traits[rows, j] = col.cast(pl.Boolean).to_numpy()
    listed = np.zeros(len(index), bool)
    listed[rows] = True
    if not listed.all():
        missing = [p for p, i in index.items() if not listed[i]]
        raise FolderError("traits_file", f"{file} does not list {len(missing)} image(s), e.g. {missing[0]!r}")
    return traits, names


def _split(root: Path, cfg: DataConfig, index: dict[str, int]) -> tuple[str, ...]:
    n = len(index)
    if not cfg.split_file:
        order = np.random.default_rng(cfg.split_seed).permutation(n)
        n_test, n_val = int(round(n * cfg.test_frac)), int(round(n * cfg.val_frac))
        split = np.full(n, "train", dtype=object)
        split[order[:n_test]] = "test"
        split[order[n_test : n_test + n_val]] = "val"
        return tuple(split)
    file, table = _read_table(root, cfg.split_file, "split_file")
    rows = _rows(root, table, file, "split_file", index)
    if "split" not in table.columns:
        raise FolderError("split_file", f"{file} has no 'split' column (columns: {', '.join(table.columns)})")
    values = table["split"].cast(str).to_list()
    bad = sorted({str(v) for v in values if v not in SPLITS})
    if bad:
        raise FolderError("split_file", f"{file}: split values must be train, val or test; got {', '.join(bad)}")
    split = [""] * n
    for i, v in zip(rows, values):
        split[i] = v
    return tuple(split)


@functools.lru_cache(maxsize=8)
def _scanned(root: str) -> tuple[tuple[str, ...], Int[np.ndarray, " N"], tuple[str, ...]]:
    path = Path(root).expanduser()
    if not root or not path.is_dir():
        raise FolderError("root", f"{root!r} is not a directory (expected class sub-folders of images)")
    paths, labels, classes = _scan(path)
    if not paths:
        raise FolderError("root", f"{path} has no images in class sub-folders (suffixes {', '.join(SUFFIXES)})")
    return tuple(paths), np.asarray(labels, np.int64), classes


@functools.lru_cache(maxsize=8)
def _traits_of(root: str, traits_file: str) -> tuple[np.ndarray | None, tuple[str, ...]]:
    paths = _scanned(root)[0]
    if not traits_file:
        return None, ()
    return _traits(Path(root).expanduser(), traits_file, {p: i for i, p in enumerate(paths)})


@functools.lru_cache(maxsize=64)
def listing(cfg: DataConfig) -> Listing:
    """The folder's images, classes, traits and splits (memoised by what each depends on: a sweep over
    `n_train` or `image_size` scans the folder and reads its tables once)."""
    paths, labels, classes = _scanned(cfg.root)
    traits, names = _traits_of(cfg.root, cfg.traits_file)
    split = _split(Path(cfg.root).expanduser(), cfg, {p: i for i, p in enumerate(paths)})
    return Listing(paths, labels, traits, split, classes, names)


def split_ids(cfg: DataConfig, split: str) -> Int[np.ndarray, " M"]:
    """Folder indices of `split`'s images, in folder order (`train`: a seeded `n_train` subset if set)."""
    ids = np.flatnonzero(np.asarray(listing(cfg).split, dtype=object) == split)
    if split == "train" and 0 < cfg.n_train < len(ids):
        ids = np.sort(np.random.default_rng(cfg.split_seed).choice(ids, cfg.n_train, replace=False))
    return ids


def check(cfg: DataConfig, splits: Sequence[str]) -> tuple[str, str] | None:
    """(field, message) of the first problem with the folder, its tables or the requested splits, else None."""
    try:
        listing(cfg)
        for split in splits:
            if not len(split_ids(cfg, split)):
                key = "split_file" if cfg.split_file else ("test_frac" if split == "test" else "val_frac")
                return key, f"the {split!r} split of {cfg.root} has no images"
    except FolderError as err:
        return err.key, str(err)
    return None


@dataclass(frozen=True)
class _Failed:
    """An image that could not be decoded, carried out of a DataLoader worker as a value (an exception raised
    in a worker comes back wrapped in the worker's traceback text)."""

    message: str


def decode(root: Path, relative: str, size: int, real_root: Path | None = None) -> UInt8[np.ndarray, "S S 3"]:
    """The image `root / relative` as RGB resized to `size` squared; ImageError (naming `relative`) when it leads
    out of root, claims more than MAX_PIXELS pixels or cannot be decoded."""
    from PIL import Image

    try:
        real = _resolves_inside(root / relative, real_root or root.resolve(), relative, "root")
    except FolderError as err:
        raise ImageError(str(err)) from None
    try:
        with Image.open(real) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{relative!r} claims {width} x {height} pixels, more than the {MAX_PIXELS:,} an "
                                 "image may have (a decompression bomb?); not decoded")
            rgb = im.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, MemoryError) as err:
        reason = (str(err).strip().splitlines() or [""])[0][:200] if not isinstance(err, OSError) or \
            not getattr(err, "filename", None) else _reason(err)
        raise ImageError(f"{relative!r} cannot be decoded ({type(err).__name__}: {reason or 'no detail'}); "
                         "a truncated or corrupt image?") from None


class _Images:
    """Map-style dataset: decoded, resized uint8 images (H, W, 3) of the given relative paths (or `_Failed`)."""

    def __init__(self, root: Path, paths: Sequence[str], size: int):
        self.root, self.paths, self.size = root, paths, size
        self.real_root = root.resolve()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> "UInt8[np.ndarray, 'S S 3'] | _Failed":
        try:
            return decode(self.root, self.paths[i], self.size, self.real_root)
        except ImageError as err:
            return _Failed(str(err))


def _stack(images: list) -> "np.ndarray | _Failed":
    failed = next((im for im in images if isinstance(im, _Failed)), None)
    return failed if failed is not None else np.stack(images)


def iter_images(cfg: DataConfig, ids: Sequence[int], batch_size: int) -> Iterator[UInt8[np.ndarray, "B S S 3"]]:
    """The images with folder indices `ids`, in that order, `batch_size` at a time, decoded by DataLoader
    workers."""
    from torch.utils.data import DataLoader

    lst = listing(cfg)
    dataset = _Images(Path(cfg.root).expanduser(), [lst.paths[i] for i in ids], cfg.image_size)
    workers = min(cfg.workers, max(1, -(-len(dataset) // batch_size)))
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_stack):
        if isinstance(batch, _Failed):
            raise ImageError(f"image folder {cfg.root}: {batch.message}")
        yield batch
