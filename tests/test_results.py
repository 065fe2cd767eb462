"""Result files: atomic writes, tolerant loading, reports and their bootstrap intervals."""

import os

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfjobs import results
from nfjobs.store.files import atomic_write_bytes
from nfjobs.store.layout import run_dir
from nfjobs.store import rows as stored
from nfjobs.reports import tables as reporting


def test_atomic_write_replaces_whole_files_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "a" / "result.parquet"
    stored.write_rows(path, [{"x": 1, "status": "ok"}])
    stored.write_rows(path, [{"x": 2, "status": "ok"}, {"x": 3, "status": "ok"}])
    assert pl.read_parquet(path)["x"].to_list() == [2, 3]
    assert os.listdir(path.parent) == ["result.parquet"]


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def boom(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"


def test_rows_with_different_columns_load_as_one_frame(tmp_path):
    stored.write_rows(tmp_path / "a" / "result.parquet", [{"kind": "train", "psnr": 20.0, "status": "ok"}])
    stored.write_rows(tmp_path / "b" / "result.parquet", [{"kind": "probe", "accuracy": 0.5, "status": "ok"}])
    df = results.load(tmp_path).collect()
    assert df.height == 2 and {"psnr", "accuracy"} <= set(df.columns)


def test_unreadable_files_are_skipped_and_reported(tmp_path, capsys):
    stored.write_rows(tmp_path / "good" / "result.parquet", [{"v": 1.0, "status": "ok"}])
    bad = tmp_path / "bad" / "result.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"PAR1 this is not parquet")
    df = results.load(tmp_path).collect()
    assert df["v"].to_list() == [1.0]
    err = capsys.readouterr().err
    assert "skipped 1 unreadable" in err and str(bad) in err


def test_cell_status_reads_ok_failed_or_nothing(tmp_path):
    assert stored.status(tmp_path, "k") is None
    stored.write_rows(run_dir(tmp_path, "k").result, [{"status": "ok"}, {"status": "ok"}])
    assert stored.status(tmp_path, "k") == "ok"
    stored.write_rows(run_dir(tmp_path, "k").result, [{"status": "failed"}])
    assert stored.status(tmp_path, "k") == "failed"


def test_cell_outcome_gives_the_status_and_last_error_line_and_one_rule_decides_blocked(tmp_path):
    stored.write_rows(run_dir(tmp_path, "up").result, [
        {"status": "failed", "error": "Traceback (most recent call last):\n  ...\nRuntimeError: out of memory\n"}])
    stored.write_rows(run_dir(tmp_path, "ok").result, [{"status": "ok", "error": ""}] * 2)
    stored.write_rows(run_dir(tmp_path, "mid").result, [{"status": "blocked", "error": "upstream up failed"}])
    assert stored.outcome(tmp_path, "up") == ("failed", "RuntimeError: out of memory")
    assert stored.outcome(tmp_path, "ok") == ("ok", "")
    assert stored.outcome(tmp_path, "none") is None
    assert stored.status(tmp_path, "mid") == "blocked"
    assert stored.describe(stored.outcome(tmp_path, "up")) == "failed: RuntimeError: out of memory"
    assert stored.describe(None) == "no result"
    assert stored.upstream_blocker(tmp_path, ["ok"]) is None
    assert stored.upstream_blocker(tmp_path, ["ok", "up"]) == ("up", "failed")
    assert stored.upstream_blocker(tmp_path, ["mid"]) == ("mid", "blocked")
    assert stored.upstream_blocker(tmp_path, ["none"])[1].startswith("has no result")


def test_loading_an_unknown_sweep_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="no launched sweep named 'nope'"):
        results.load("nope", tmp_path)


def test_report_groups_and_summarises():
    df = pl.DataFrame({
        "lr": [0.1, 0.1, 0.1, 0.2, 0.2], "acc": [0.5, 0.7, 0.6, 0.9, None],
        "status": ["ok", "ok", "ok", "ok", "ok"],
    })
    table = reporting.report(df, ["lr"], "acc")
    assert table["lr"].to_list() == [0.1, 0.2]
    assert table["n"].to_list() == [3, 1]
    assert table["mean"].to_list() == pytest.approx([0.6, 0.9])
    assert table["std"][0] == pytest.approx(0.1)
    assert table["ci95_low"][1] is None and table["ci95_high"][1] is None  # one value: no interval
    assert table["std"][1] is None


def test_report_excludes_failed_rows_and_names_missing_columns():
    df = pl.DataFrame({"g": ["a", "a"], "m": [1.0, 100.0], "status": ["ok", "failed"]})
    assert reporting.report(df, ["g"], "m")["mean"].to_list() == [1.0]
    with pytest.raises(KeyError, match="nope"):
        reporting.report(df, ["nope"], "m")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=40),
       st.floats(0.5, 0.99))
def test_bootstrap_ci_is_ordered_and_within_the_data_range(values, level):
    low, high = reporting.bootstrap_ci(np.asarray(values), level=level)
    assert min(values) - 1e-6 <= low <= high <= max(values) + 1e-6


@settings(max_examples=30, deadline=None)
@given(st.floats(-1e3, 1e3, allow_nan=False), st.integers(2, 30))
def test_bootstrap_ci_of_a_constant_is_that_constant(value, n):
    low, high = reporting.bootstrap_ci(np.full(n, value))
    assert low == pytest.approx(value) and high == pytest.approx(value)


def test_bootstrap_ci_of_fewer_than_two_values_is_no_interval():
    assert all(np.isnan(reporting.bootstrap_ci(np.asarray(v))).all() for v in ([], [3.0], [np.nan, 2.0]))


def test_exclusions_count_cells_by_reason():
    df = pl.DataFrame({
        "key": ["a", "a", "b", "c", "d", "e", "e"],
        "status": ["ok", "ok", "failed", "blocked", "ok", "ok", "ok"],
        "m": [1.0, None, None, None, None, 2.0, 3.0],
    })  # a: one split without the metric is still reported; d: finished without it
    assert reporting.exclusions(df, "m") == {"blocked": 1, "failed": 1, "missing m": 1}
    assert reporting.exclusions(df.filter(pl.col("key") == "e"), "m") == {}


def test_cell_outcome_gives_the_status_and_the_last_error_line(tmp_path):
    assert stored.outcome(tmp_path, "k") is None
    path = run_dir(tmp_path, "k").result
    stored.write_rows(path, [{"status": "ok", "error": ""}, {"status": "ok", "error": ""}])
    assert stored.outcome(tmp_path, "k") == ("ok", "")
    stored.write_rows(path, [{"status": "failed", "error": "Traceback:\n  File x\nValueError: bad lr\n\n"}])
    assert stored.outcome(tmp_path, "k") == ("failed", "ValueError: bad lr")
    stored.write_rows(path, [{"status": "blocked", "error": "upstream u failed"}])
    assert stored.outcome(tmp_path, "k") == ("blocked", "upstream u failed")
    path.write_bytes(b"torn")
    assert stored.outcome(tmp_path, "k") is None


def test_bootstrap_ci_covers_the_true_mean_about_as_often_as_it_says():
    rng = np.random.default_rng(0)
    hits = sum(
        low <= 0.0 <= high
        for low, high in (reporting.bootstrap_ci(rng.normal(0.0, 1.0, 50), 0.9, n_boot=500, seed=i) for i in range(200))
    )
    assert 0.8 <= hits / 200 <= 0.97


def test_markdown_export_is_a_pipe_table():
    text = reporting.to_markdown(pl.DataFrame({"a": [1, 2], "b": [0.5, None]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.5000 |", "| 2 |  |"]
