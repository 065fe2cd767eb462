"""`launch.py report` groups by the sweep's axes, pools only over seeds and never averages a varied axis unless
asked; its flags that cannot work are refused in one line; the HTML folder is refused unless a report made it."""

import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from nfjobs.reports import html as html_report
from nfjobs.reports import plots

LR_SWEEP = 'kind = "toy"\noptim.lr = [1e-3, 1e-2]\nseed = [0, 1]\n'


@pytest.fixture
def lr_sweep(run_launch, sweep_file, tmp_path):
    assert run_launch("--sweep", str(sweep_file(LR_SWEEP)), "--debug") == 0
    return tmp_path / "runs"


def report(capsys, runs, *flags):
    from nfjobs.commands import main

    code = main(["report", "--sweep", "s", "--runs-root", str(runs), "--format", "csv", *flags])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_sweep_over_lr_reports_two_rows_never_their_mean(lr_sweep, capsys):
    code, out, err = report(capsys, lr_sweep, "--metric", "metric", "--where", "split=val")
    table = pl.read_csv(out.strip().encode())
    assert code == 0 and table["optim.lr"].to_list() == [1e-3, 1e-2] and table["n"].to_list() == [2, 2]
    assert "grouped by optim.lr" in err and "repeat seeds" in err and "averaged over" not in err
    code, out, err = report(capsys, lr_sweep, "--metric", "metric", "--where", "split=val", "--pool", "optim.lr")
    assert pl.read_csv(out.strip().encode())["n"].to_list() == [4] and "averaged over varied axes: optim.lr" in err


def test_without_metric_the_overview_lists_states_axes_and_each_cells_metrics(lr_sweep, capsys):
    from nfjobs.commands import main

    assert main(["report", "--sweep", "s", "--runs-root", str(lr_sweep)]) == 0
    out = capsys.readouterr().out
    assert "4 cells: 4 ok" in out and "group main (toy): axes optim.lr, pooled over seeds" in out
    assert out.count("toy-") == 4 and "metric" in out.replace("sweep s", "")


@pytest.mark.parametrize("flags, says", [
    (["--html", "FILE"], "is a file"), (["--out", "DIR"], "is a folder"), (["--metric", "split"], "not a number"),
    (["--level", "1.5"], "between 0 and 1"), (["--level", "0"], "between 0 and 1"),
    (["--metric", "metric", "--where", "split"], "expected column=value")])
def test_flags_that_cannot_work_give_one_line_and_exit_2(lr_sweep, tmp_path, flags, says):
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "DIR").mkdir()
    flags = [str(tmp_path / f) if f in ("FILE", "DIR") else f for f in flags]
    out = subprocess.run([sys.executable, "launch.py", "report", "--sweep", "s", "--runs-root", str(lr_sweep),
                          *flags], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_the_html_folder_must_be_empty_or_a_reports_and_no_link_is_written_through(lr_sweep, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(html_report.OutputRefused, match="not empty"):
        html_report.write("s", lr_sweep, mine)
    site = tmp_path / "site"
    html_report.write("s", lr_sweep, site)
    html_report.write("s", lr_sweep, site)  # a report's own folder: written again
    outside = tmp_path / "outside.html"
    outside.write_text("keep")
    (site / "index.html").unlink()
    (site / "index.html").symlink_to(outside)
    shutil.rmtree(site / "cells")
    (tmp_path / "elsewhere").mkdir()
    (site / "cells").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(html_report.OutputRefused, match="symbolic link"):
        html_report.write("s", lr_sweep, site)
    assert outside.read_text() == "keep" and not any((tmp_path / "elsewhere").iterdir())


def test_a_dollar_in_a_label_is_drawn_verbatim(tmp_path):
    curves = {"cost=$5$ and $\\alpha$": pl.DataFrame({"step": [1, 2], "wall_s": [0.5, 1.0], "loss": [1.0, 0.5]})}
    fig = plots.curves(curves, "loss", "a $title$", tmp_path / "c.png")
    assert fig.axes[1].get_legend().get_texts()[0].get_text() == r"cost=\$5\$ and \$\alpha\$"
    assert fig.get_suptitle() == r"a \$title\$"
    table = pl.DataFrame({"probe": ["$x$"], "mean": [0.5], "ci95_low": [None], "ci95_high": [None]})
    plots.metric_bars(table, ["probe"], "accuracy", "$t$", 0.1, tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_the_cells_table_leaves_a_measurement_only_one_cell_has_to_that_cells_page():
    # a search over context_frac: each train cell also evaluates at its own drawn fraction
    from nfjobs.reports import tables

    rows = pl.DataFrame({
        "key": ["a", "a", "a", "b", "b", "b"], "kind": ["x"] * 6, "status": ["ok"] * 6,
        "eval_context_frac": [0.5, 1.0, 0.5501, 0.5, 1.0, 0.6391], "psnr": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    cells = pl.DataFrame({"key": ["a", "b"], "state": ["ok", "ok"], "context_frac": [0.5501, 0.6391]})
    table = tables.cell_table(rows, cells, ["context_frac"])
    assert [c for c in table.columns if c.startswith("psnr")] == ["psnr@0.5", "psnr@1.0"]
    assert table.filter(pl.col("key") == "b")["psnr@1.0"].item() == 5.0
    one = tables.cell_table(rows.filter(pl.col("key") == "a"), cells.head(1), ["context_frac"])
    assert "psnr@0.5501" in one.columns  # a cell alone keeps all its own
