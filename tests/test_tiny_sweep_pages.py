"""Every shipped tiny sweep, launched as a user would, gets an HTML report that renders in headless Chromium with
every image loaded, no console message, and each value of each swept field as its own row of its group's table;
and `launch.py tables` writes its seed tables from its rows, in the format of docs/results/tiny/."""

from pathlib import Path

import polars as pl

from nfjobs import results
from nfjobs.reports import html as html_report
from test_html_report import browse, console_lines

def check_page(sweep: Path, runs: Path, out: Path, chromium: str) -> None:
    """The sweep's page renders in Chromium (every image, no console message) and shows each value of each swept
    field in its group's table."""
    page = html_report.write(results.sweep_name(sweep), runs, out / "site")
    dom, check, stderr = browse(chromium, page, out)
    assert check["broken"] == [] and check["images"] > 0 and console_lines(stderr) == []
    swept = results.swept(results.sweep_name(sweep), runs)
    for group, info in results.axes(results.sweep_name(sweep), runs).items():
        mine = swept.filter(group=group)
        for axis in info.axes:
            for value in mine[axis].drop_nulls().unique().to_list():
                assert f">{html_report.esc(value)}<" in dom, (group, axis, value)
    if sweep.stem == "ginr_tiny":
        assert ">lainr<" in dom and ">simple<" in dom and "Axes: <code>ginr.decoder</code>" in dom


TINY_RESULTS = Path(__file__).parents[1] / "docs" / "results" / "tiny"
MEASURED = {"probe": "accuracy", "train": "psnr", "score": "map"}
"""The metric each kind's seed table reports (train: GINR / JEPA fields, score: summary rows)."""


def _header(text: str) -> list[str]:
    """A markdown file's title and each table's header line: its format, not its numbers."""
    lines = text.splitlines()
    return [lines[0], *(a for a, b in zip(lines, lines[1:]) if b.startswith("|---"))]


def check_tables(sweep: Path, runs: Path, out: Path, run_launch) -> None:
    """`launch.py tables` writes the sweep's seed tables from its rows: every ok cell's final metric is in them,
    and where docs/results/tiny/ holds the sweep's tables, those have the same files and format."""
    assert run_launch("tables", "--sweep", sweep, "--out", out) == 0
    text = "".join(p.read_text() for p in sorted(out.glob("*.md")))
    rows = results.load(sweep, runs).collect().filter(pl.col("status") == "ok")
    rows = rows.filter(pl.col("split").is_null() | (pl.col("split") == "val")) if "split" in rows.columns else rows
    rows = rows.filter(pl.col("row_type").is_null() | (pl.col("row_type") == "summary")) \
        if "row_type" in rows.columns else rows
    rows = rows.filter(pl.col("model").is_null() | pl.col("model").is_in(["ginr", "jepa"])) \
        if "model" in rows.columns else rows  # the Perceiver fields have no seed table
    for kind, metric in MEASURED.items():
        for value in rows.filter(pl.col("kind") == kind)[metric].to_list() if metric in rows.columns else []:
            assert f"| {value:.4f} |" in text, (kind, metric, value)
    committed = TINY_RESULTS / sweep.stem
    if committed.is_dir():
        assert sorted(p.name for p in committed.iterdir()) == sorted(p.name for p in out.iterdir())
        for fresh in out.glob("*.md"):
            assert _header((committed / fresh.name).read_text()) == _header(fresh.read_text()), fresh.name


def test_a_shipped_tiny_sweeps_page(chromium, run_launch, tmp_path):
    """ginr_tiny in the quick loop; every other CPU-sized sweep's page is checked by
    test_shipped_sweeps.test_cpu_sized_sweeps_run_end_to_end, after the launch it makes anyway."""
    sweep = Path(__file__).parents[1] / "configs" / "sweeps" / "ginr_tiny.toml"
    assert run_launch("--sweep", str(sweep), "--debug") == 0
    check_tables(sweep, tmp_path / "runs", tmp_path / "tables", run_launch)
    check_page(sweep, tmp_path / "runs", tmp_path, chromium)
