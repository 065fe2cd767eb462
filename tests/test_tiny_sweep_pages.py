"""Every shipped tiny sweep, launched as a user would, gets an HTML report that renders in headless Chromium with
every image loaded, no console message, and each value of each swept field as its own row of its group's table."""

from pathlib import Path

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


def test_a_shipped_tiny_sweeps_page(chromium, run_launch, tmp_path):
    """ginr_tiny in the quick loop; every other CPU-sized sweep's page is checked by
    test_shipped_sweeps.test_cpu_sized_sweeps_run_end_to_end, after the launch it makes anyway."""
    sweep = Path(__file__).parents[1] / "configs" / "sweeps" / "ginr_tiny.toml"
    assert run_launch("--sweep", str(sweep), "--debug") == 0
    check_page(sweep, tmp_path / "runs", tmp_path, chromium)
