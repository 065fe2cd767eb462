"""Hostile image folders (issue 22): tables and images are read only inside `data.root` (a symbolic link leading
out is refused before anything is read, and the outside file's content never reaches a message), a link loop is
one line, images are decoded within a pixel limit, and every decode error names the file relative to the root.
Each failure mode is one fixture folder, refused in-process and by the CLI (exit 2, one line, nothing written)."""

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import write_png_folder

from nfjobs.config import DataConfig
from nfjobs.data import check, imagefolder, iter_batches

ROOT = Path(__file__).parent.parent
SECRET = "SECRET-OUTSIDE-CONTENT"
PROJECT = '[tool.nfjobs.kinds]\ntoy = "tests.kinds.toy"\n'


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose IHDR claims `width` x `height` RGB pixels (a decompression bomb's
    header; the IDAT holds one row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def truncated_jpeg(size: int = 32) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    rgb = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    return data[: len(data) // 2]  # the second half of the scan and the end marker cut off


@pytest.fixture
def folder(tmp_path):
    """An ordinary folder of 8 PNGs in two classes (`a`, `b`) and a secret file outside it."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    write_png_folder(root, rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8), np.array([0, 1] * 4), ("a", "b"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text(f"path,{SECRET}\n{SECRET},1\n")
    (outside / "secret.png").write_bytes((root / "a" / "00000.png").read_bytes())
    return root


def cfg_of(root: Path, **kw) -> DataConfig:
    return DataConfig(name="imagefolder", root=str(root), image_size=8, val_frac=0.25, workers=0, **kw)


# ------------------------------------------------------------------------ one fixture per failure mode
def linked_traits_table(root: Path) -> dict:
    (root / "traits.csv").symlink_to(root.parent / "outside" / "secret.csv")
    return {"traits_file": "traits.csv"}


def linked_split_table(root: Path) -> dict:
    (root / "meta").mkdir()
    (root / "meta" / "splits.csv").symlink_to(Path("..") / ".." / "outside" / "secret.csv")  # relative link
    return {"split_file": "meta/splits.csv"}


def table_in_linked_folder(root: Path) -> dict:
    (root / "tables").symlink_to(root.parent / "outside", target_is_directory=True)
    return {"traits_file": "tables/secret.csv"}


def link_loop_image(root: Path) -> dict:
    os.symlink("loop.png", root / "a" / "loop.png")
    return {}


def link_cycle_image(root: Path) -> dict:
    os.symlink("y.png", root / "b" / "x.png")
    os.symlink("x.png", root / "b" / "y.png")
    return {}


def link_loop_table(root: Path) -> dict:
    os.symlink("traits.csv", root / "traits.csv")
    return {"traits_file": "traits.csv"}


FOLDERS = [
    (linked_traits_table, "data.traits_file", "'traits.csv' is a symbolic link leading out of root"),
    (linked_split_table, "data.split_file", "'meta/splits.csv' is a symbolic link leading out of root"),
    (table_in_linked_folder, "data.traits_file", "'tables/secret.csv' is a symbolic link leading out of root"),
    (link_loop_image, "data.root", "'a/loop.png' cannot be followed"),
    (link_cycle_image, "data.root", "cannot be followed"),
    (link_loop_table, "data.traits_file", "'traits.csv' cannot be followed"),
]
IDS = [f[0].__name__ for f in FOLDERS]


@pytest.mark.parametrize(("make", "key", "words"), FOLDERS, ids=IDS)
def test_hostile_folder_is_refused_by_the_check(make, key, words, folder):
    imagefolder._scanned.cache_clear()
    problems = check(cfg_of(folder, **make(folder)), splits=("train", "val"))
    assert len(problems) == 1, problems
    (got_key, msg), = problems
    assert got_key == key and words in msg
    assert SECRET not in msg and "\n" not in msg


@pytest.mark.parametrize(("make", "key", "words"), FOLDERS, ids=IDS)
def test_hostile_folder_is_refused_by_the_cli(make, key, words, folder, tmp_path):
    extra = make(folder)
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(PROJECT)
    fields = "".join(f', {k} = "{v}"' for k, v in extra.items())
    sweep = tmp_path / "hostile.toml"
    sweep.write_text(f'kind = "cache"\nsource = "original"\n'
                     f'data = {{ name = "imagefolder", root = "{folder}", image_size = 8, val_frac = 0.25, '
                     f'workers = 0{fields} }}\n')
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--sweep", str(sweep), "--dry-run"],
                          cwd=project, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
    assert f"{sweep}: {key}: " in proc.stderr and words in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert sorted(p.name for p in project.iterdir()) == ["pyproject.toml"]  # no runs/ or logs/


def test_a_linked_image_leading_out_is_not_listed_and_not_decoded(folder):
    (folder / "a" / "zz.png").symlink_to(folder.parent / "outside" / "secret.png")
    imagefolder._scanned.cache_clear()
    assert "a/zz.png" not in imagefolder.listing(cfg_of(folder)).paths
    with pytest.raises(imagefolder.ImageError, match="'a/zz.png' is a symbolic link leading out of root"):
        imagefolder.decode(folder, "a/zz.png", 8)


def test_a_link_inside_the_root_is_still_read(folder):
    (folder / "b" / "zz.png").symlink_to(folder / "a" / "00000.png")
    imagefolder._scanned.cache_clear()
    cfg = cfg_of(folder)
    assert "b/zz.png" in imagefolder.listing(cfg).paths and check(cfg) == []
    assert imagefolder.decode(folder, "b/zz.png", 8).shape == (8, 8, 3)


def test_a_table_that_fails_to_parse_is_named_in_one_line(folder):
    (folder / "traits.csv").write_bytes(b"path,x\n\"unterminated\n" + b"\x00" * 10)
    problems = check(cfg_of(folder, traits_file="traits.csv"))
    assert problems and problems[0][0] == "data.traits_file" and "\n" not in problems[0][1]


# ------------------------------------------------------------------------ decoding within bounds
BROKEN = [
    ("bomb.png", lambda: png_claiming(100_000, 100_000), "cannot be decoded (DecompressionBombError"),
    ("under_pil_limit.png", lambda: png_claiming(9_000, 9_000), "claims 9000 x 9000 pixels, more than the 67,108,864"),
    ("cut.jpg", truncated_jpeg, "cannot be decoded"),
    ("garbage.png", lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cannot be decoded"),
]


@pytest.mark.parametrize(("name", "data", "words"), BROKEN, ids=[b[0] for b in BROKEN])
@pytest.mark.parametrize("workers", [0, 1])
def test_an_image_that_cannot_be_decoded_is_named_relative_to_the_root(name, data, words, workers, folder):
    (folder / "a" / name).write_bytes(data())
    imagefolder._scanned.cache_clear()
    cfg = DataConfig(name="imagefolder", root=str(folder), image_size=8, val_frac=0.0, workers=workers)
    with pytest.raises(imagefolder.ImageError) as info:
        for _ in iter_batches(cfg, "train", batch_size=4):
            pass
    msg = str(info.value)
    assert f"'a/{name}'" in msg and words in msg
    assert "Traceback" not in msg and "\n" not in msg and str(folder.parent / "outside") not in msg


def test_a_bomb_is_refused_before_its_pixels_are_allocated(folder):
    """A 10-gigapixel claim must fail at once, not after trying to allocate 30 GB."""
    import time

    (folder / "a" / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    start = time.perf_counter()
    with pytest.raises(imagefolder.ImageError):
        imagefolder.decode(folder, "a/bomb.png", 8)
    assert time.perf_counter() - start < 1.0


def test_a_corrupt_image_fails_its_cell_with_the_file_named(folder, tmp_path, run_launch):
    """At run time (the check does not decode): the cell's failed row names the image relative to data.root."""
    from nfjobs.store import rows

    (folder / "b" / "cut.jpg").write_bytes(truncated_jpeg())
    imagefolder._scanned.cache_clear()
    sweep = tmp_path / "corrupt.toml"
    sweep.write_text(f'kind = "cache"\nsource = "original"\nsplit = "train"\n'
                     f'data = {{ name = "imagefolder", root = "{folder}", image_size = 8, val_frac = 0.0, '
                     f'workers = 0 }}\n')
    runs = tmp_path / "runs"
    with pytest.raises(imagefolder.ImageError, match="'b/cut.jpg' cannot be decoded"):  # debug raises at once
        run_launch("--sweep", str(sweep), "--debug", runs=runs)
    keys = [p.name for p in runs.iterdir() if p.name.startswith("cache-")]
    assert len(keys) == 1
    status, error = rows.outcome(runs, keys[0])
    assert status == "failed"
    last = error.strip().splitlines()[-1]
    assert "ImageError" in last and "'b/cut.jpg' cannot be decoded" in last
