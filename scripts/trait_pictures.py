"""Collect the pictures of a finished trait-discovery sweep into one folder to commit (e.g. docs/results/traits/).

    uv run python scripts/trait_pictures.py --sweep configs/sweeps/traits_ginr_cifar.toml --runs-root runs \
        --out docs/results/traits

Writes seed 004's chart (test mAP against training images, one line per prototype count, the 5-95 % band of
per-trait AP) for all scorers together (`map_vs_train_images.png`) and per scorer (`map_<scorer>.png`), the
table behind them (`summary.md`, with each cell's constant-predictor mAP), and copies one score cell's per-trait
grids and index page into `pictures/`: by default the cell with the best test mAP among those that chose
prototypes on the most training images (`--key` picks another). Files over 16 MiB are not copied.
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

    from nfjobs import results
    from nfjobs.reports import plots
    from nfjobs.reports import traits as report

    rows = pl.concat([results.load(s, runs_root).collect() for s in sweep], how="diagonal_relaxed")
    if "row_type" not in rows.columns:
        raise ValueError(f"{', '.join(sweep)}: no score rows under {runs_root} (has the sweep run?)")
    rows = rows.filter(pl.col("row_type") == "summary", pl.col("status") == "ok")
    if rows.is_empty():
        raise ValueError(f"{', '.join(sweep)}: no finished score cells under {runs_root}")
    out.mkdir(parents=True, exist_ok=True)
    table = report.table(rows)
    written = [out / "map_vs_train_images.png"]
    plots.map_vs_train_images(table, written[0], "Trait discovery: test mAP vs training images")
    for scorer in table["Scorer"].unique().sort().to_list():
        path = out / f"map_{scorer}.png"
        plots.map_vs_train_images(table.filter(pl.col("Scorer") == scorer), path,
                                  f"{scorer}: test mAP vs training images (one line per prototype count)")
        written.append(path)
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
    md = report.markdown(table)
    (out / "summary.md").write_text(
        f"# {', '.join(Path(s).name for s in sweep)}: trait discovery\n\n"
        f"Pictures (`pictures/index.html`): cell `{key}`, scorer {cell['scorer']}, {cell.get('prototypes') or cell['n_prototypes']} "
        f"prototypes, chosen on {cell['n_train_images']} training images; test mAP {cell['map']:.4f} (constant "
        f"predictor {cell['constant_map']:.4f}) over {cell['n_traits']} traits.\n\n"
        "![mAP vs training images](map_vs_train_images.png)\n\n" + md + "\n"
        + (f"\nNot copied (over 16 MiB): {', '.join(skipped)}\n" if skipped else ""))
    written.append(out / "summary.md")
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
