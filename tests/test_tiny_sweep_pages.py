"""Every shipped tiny sweep, launched as a user would, gets an HTML report that renders in headless Chromium with
every image loaded, no console message, and each value of each swept field as its own row of its group's table."""

from pathlib import Path

import pytest

from nfjobs import results
from nfjobs.reports import html as html_report
from test_html_report import browse, console_lines

QUICK = ["ginr_tiny"]
SLOW = ["jepa_tiny", "nf_variants_tiny", "representations_tiny", "prototypes_tiny", "prototypes_folder_tiny",
        "traits_ginr_cifar_tiny", "quickstart"]


@pytest.mark.parametrize("name", [*QUICK, *[pytest.param(n, marks=pytest.mark.slow) for n in SLOW]])
def test_a_shipped_tiny_sweeps_page(name, chromium, run_launch, tmp_path):
    sweep = Path(__file__).parents[1] / "configs" / "sweeps" / f"{name}.toml"
    assert run_launch("--sweep", str(sweep), "--debug") == 0
    runs = tmp_path / "runs"
    page = html_report.write(results.sweep_name(sweep), runs, tmp_path / "site")
    dom, check, stderr = browse(chromium, page, tmp_path)
    assert check["broken"] == [] and check["images"] > 0 and console_lines(stderr) == []
    swept = results.swept(results.sweep_name(sweep), runs)
    for group, info in results.axes(results.sweep_name(sweep), runs).items():
        mine = swept.filter(group=group)
        for axis in info.axes:
            for value in mine[axis].drop_nulls().unique().to_list():
                assert f">{html_report.esc(value)}<" in dom, (group, axis, value)
    if name == "ginr_tiny":
        assert ">lainr<" in dom and ">simple<" in dom and "Axes: <code>ginr.decoder</code>" in dom
