"""Collect the pictures of a finished trait-discovery sweep into one folder to commit (e.g. docs/results/traits/).

    uv run python scripts/trait_pictures.py --sweep configs/sweeps/traits_ginr_cifar.toml --runs-root runs \
        --out docs/results/traits

Writes what `launch.py tables` writes for seed 004 (`traits_summary.md`, `traits_map_vs_train_images.png`,
`traits_map_<scorer>.png`: `nfjobs.reports.traits`) over the sweeps' rows together, and copies one score cell's
per-trait grids and index page into `pictures/`, named in `pictures.md`: by default the cell with the best test
mAP among those that chose prototypes on the most training images (`--key` picks another). Files over 16 MiB are
not copied.
"""

import argparse
import shutil
import sys
from pathlib import Path
from nfjobs.store.layout import run_dir

MAX_BYTES = 16 << 20


def collect(sweep: list[str], runs_root: Path, out: Path, key: str = "") -> dict:
    """The folder under `out`; returns what was written: `key` (the cell whose pictures were copied), `files`."""
    import polars as pl

    from nfjobs.reports import traits, views

    loaded = [views.load(s, runs_root) for s in sweep]
    rows = pl.concat([s.rows for s in loaded], how="diagonal_relaxed")
    if "row_type" not in rows.columns:
        raise ValueError(f"{', '.join(sweep)}: no score rows under {runs_root} (has the sweep run?)")
    rows = rows.filter(pl.col("row_type") == "summary", pl.col("status") == "ok")
    if rows.is_empty():
        raise ValueError(f"{', '.join(sweep)}: no finished score cells under {runs_root}")
    out.mkdir(parents=True, exist_ok=True)
    together = views.Sweep(", ".join(s.name for s in loaded), runs_root, rows,
                           {g: a for s in loaded for g, a in s.axes.items()})
    written = traits.write(together, out)
    if not key:
        most = rows["n_train_images"].max()
        key = rows.filter(pl.col("n_train_images") == most).sort("map", descending=True)["key"][0]
    elif key not in rows["key"].to_list():
        raise ValueError(f"--key {key!r} is not a finished score cell of {', '.join(sweep)}")
    cell = rows.filter(pl.col("key") == key).row(0, named=True)
    source = run_dir(runs_root, key).path / "pictures"
    if not (source / "index.html").is_file():
        raise ValueError(f"{source} has no index.html (was the cell run with pictures_top_k = 0?)")
    target = out / "pictures"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    skipped = []
    for file in sorted([*source.glob("trait_*.png"), source / "index.html"]):
        if file.stat().st_size > MAX_BYTES:
            skipped.append(file.name)
            continue
        shutil.copyfile(file, target / file.name)
        written.append(target / file.name)
    (out / "pictures.md").write_text(
        f"# {together.name}: one score cell's pictures\n\n"
        f"`pictures/index.html`: cell `{key}`, scorer {cell['scorer']}, {cell.get('prototypes') or cell['n_prototypes']} "
        f"prototypes, chosen on {cell['n_train_images']} training images; test mAP {cell['map']:.4f} (constant "
        f"predictor {cell['constant_map']:.4f}) over {cell['n_traits']} traits. The table: `traits_summary.md`.\n"
        + (f"\nNot copied (over 16 MiB): {', '.join(skipped)}\n" if skipped else ""))
    written.append(out / "pictures.md")
    return {"key": key, "files": written, "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", nargs="+", required=True, help="the sweep file(s) that were launched")
    parser.add_argument("--runs-root", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--key", default="", help="score cell whose pictures to copy (default: see above)")
    args = parser.parse_args(argv)
    try:
        done = collect(args.sweep, args.runs_root, args.out, args.key)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(done['files'])} files; pictures of {done['key']}")
    for f in done["files"]:
        print(f"  {f} ({f.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
