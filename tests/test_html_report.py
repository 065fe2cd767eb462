"""`launch.py report --html DIR`: one static page per sweep, checked in a real headless Chromium (it renders, every
image loads, no console message), with hostile strings from result files escaped."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from nfjobs.reports import html as html_report
from nfjobs.context import Context
from nfjobs.jobs import smoke
from nfjobs.nf.training import save_grid
from nfjobs.worker import CellSpec, run_cell
from nfjobs.store.layout import run_dir
from nfjobs.store import rows as stored
from nfjobs.store import manifest

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"));
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-broken", JSON.stringify(broken));
});
</script>"""


def browse(chromium: str, page: Path, tmp: Path, screenshot: Path | None = None) -> tuple[str, dict, str]:
    """Load a copy of `page` (beside it, with a check script) in headless Chromium: (DOM, check results, stderr)."""
    checked = page.with_name(f"_checked_{page.name}")
    checked.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'chromium-profile'}", "--allow-file-access-from-files",
            "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0"]
    out = subprocess.run([*base, "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", out.stdout)
    assert body, out.stdout[:500]
    attrs = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', body.group(1)))
    check = {"images": int(attrs["data-images"]), "broken": json.loads(attrs["data-broken"].replace("&quot;", '"'))}
    if screenshot is not None:
        subprocess.run([*base, f"--screenshot={screenshot}", "--window-size=1280,3000", page.as_uri()],
                       capture_output=True, text=True, timeout=120, check=True)
    checked.unlink()
    return out.stdout, check, out.stderr


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A sweep `demo` with real smoke cells (one ok, one failed), and train / probe / score cells whose result
    files, metrics.jsonl and reconstruction grid are written by the real writers; a hostile group and error."""
    runs = tmp_path_factory.mktemp("runs")
    cells = {}
    for key, cfg in (("smoke-ok", smoke.Config(steps=2, label="a")), ("smoke-bad", smoke.Config(fail_at_step=1))):
        spec = CellSpec(kind="smoke", config=cfg, key=key, sweep="demo", group=HOSTILE if key == "smoke-bad" else "g",
                        runs_root=str(runs), provenance={})
        try:
            run_cell(spec)
        except RuntimeError:
            pass
        cells[key] = {"kind": "smoke", "group": spec.group, "stage": 0, "source": "s.toml"}
    for i, (model, frac) in enumerate((("perceiver", 1.0), ("perceiver", 0.2))):
        key = f"train-{i}"
        ctx = Context(key=key, kind="train", runs_root=runs)
        for epoch in (1, 2):
            ctx.log_metrics(epoch * 10, {"epoch": epoch, "curve_psnr@1.0": 15.0 + epoch + i}, phase="epoch")
        ctx.close()
        save_grid(ctx.run_dir / "reconstructions.png", [torch.rand(4, 3, 8, 8) for _ in range(4)],
                  labels=["ground truth", "context 10%", "context 20%", "context 100%"], title=model)
        stored.write_rows(run_dir(runs, key).result, [
            {"sweep": "demo", "key": key, "kind": "train", "group": "nf", "status": "ok", "error": "",
             "model": model, "context_frac": frac, "nce_weight": 0.0, "init_from": "", "seed": 0, "split": split,
             "eval_context_frac": f, "psnr": 20.0 + 5 * f + i, "epoch": 2, "run.seconds": 1800.0 * (i + 1),
             "run.gpus": 2, "run.world_size": 2}
            for split in ("val_curve", "val") for f in (0.1, 1.0)])
        cells[key] = {"kind": "train", "group": "nf", "stage": 0, "source": "s.toml"}
    for seed in (0, 1):
        key = f"probe-{seed}"
        stored.write_rows(run_dir(runs, key).result, [
            {"sweep": "demo", "key": key, "kind": "probe", "group": "probes", "status": "ok", "error": "", "seed": seed,
             "representation": HOSTILE, "context": "full", "probe": "linear", "tdsm_mode": "frozen",
             "accuracy": 0.5 + 0.1 * seed, "train_s": 1.0}])
        cells[key] = {"kind": "probe", "group": "probes", "stage": 1, "source": "s.toml"}
    stored.write_rows(run_dir(runs, "score-0").result, [
        {"sweep": "demo", "key": "score-0", "kind": "score", "group": "traits", "status": "ok", "error": "",
         "row_type": "summary", "scorer": "kmeans", "n_prototypes": 8, "n_train_images": n, "map": 0.3,
         "ap_q05": 0.1, "ap_q95": 0.7, "constant_map": 0.1} for n in (16, 64)])
    cells["score-0"] = {"kind": "score", "group": "traits", "stage": 2, "source": "s.toml"}
    cells["not-run"] = {"kind": "smoke", "group": "g", "stage": 0, "source": "s.toml"}
    manifest.write(runs, {"sweep": "demo", "cells": cells, "jobs": {}})
    return runs


def test_page_content_and_escaping(sweep, tmp_path):
    page = html_report.write("demo", sweep, tmp_path / "site")
    text = page.read_text()
    assert "8 cells" in text and ">ok 6<" in text and ">failed 1<" in text and ">no result 1<" in text
    assert "RuntimeError: smoke job failing on purpose at step 1" in text  # the failure's last error line
    assert text.count("<script>") == 1 and text.replace(html_report.SORT_JS, "").count("<script") == 0
    assert "onerror=alert" not in text.replace("onerror=alert(1)&gt;", "")
    assert html_report.esc(HOSTILE) in text
    pngs = sorted(p.name for p in (tmp_path / "site" / "plots").glob("*.png"))
    for name in pngs:
        assert f'src="plots/{name}"' in text
    assert any("epoch_curve_psnr" in p for p in pngs) and any("map_vs_train_images" in p for p in pngs)
    nf = text.split("group nf <small>")[1].split("<h3>")[0]  # the train cells' table: wall time, GPU-hours
    assert "gpu_hours</th>" in nf and '<td class="">1800.0000</td><td class="">2.0000</td>' in nf  # 1800 s x 2 ranks x 2 GPUs
    assert '<td class="">3600.0000</td><td class="">4.0000</td>' in nf
    assert any(p.endswith("_accuracy.png") for p in pngs) and any("psnr_context" in p for p in pngs)
    assert (tmp_path / "site" / "cells" / "train-0.png").is_file()
    assert 'src="train-0.png"' in (tmp_path / "site" / "cells" / "train-0.html").read_text()
    cell = (tmp_path / "site" / "cells" / "smoke-ok.html").read_text()
    assert "what differs from the defaults" in cell  # from config.json, written by the runner when the cell started
    assert '<td class="t">label</td><td class="t">a</td>' in cell and '<td class="t">steps</td><td class="t">2</td>' in cell
    assert not any("etc" in p.name for p in (tmp_path / "site").rglob("*"))
    assert "psnr by" in text and "trait discovery" in text


def test_a_manifest_naming_a_path_as_a_cell_is_refused_in_one_line_and_other_sweeps_still_work(sweep, tmp_path,
                                                                                                  capsys):
    from nfjobs import commands as launch

    sweep = Path(shutil.copytree(sweep, tmp_path / "runs"))  # the fixture is shared: damage a copy
    path = sweep / "_sweeps" / "demo.json"
    data = json.loads(path.read_text())
    manifest.write(sweep, {**data, "sweep": "other"})
    data["cells"]["../../etc"] = {"kind": "smoke", "group": "g", "stage": 0, "source": "s.toml"}
    path.write_text(json.dumps(data))
    for verb in (["status"], ["report", "--metric", "accuracy"], ["cancel"]):
        with pytest.raises(SystemExit) as info:
            launch.main([verb[0], "--sweep", "demo", "--runs-root", str(sweep), *verb[1:]])
        err = capsys.readouterr().err
        assert info.value.code == 2 and len(err.strip().splitlines()) == 1 and str(path) in err, err
        assert "not a cell key" in err
    assert launch.main(["status", "--sweep", "other", "--runs-root", str(sweep)]) == 0


def test_config_json_is_shown_escaped_and_a_symlinked_grid_is_not_copied(sweep, tmp_path):
    (sweep / "train-1" / "config.json").write_text(json.dumps({"note": HOSTILE}))
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\nsecret")
    grid = sweep / "score-0" / "reconstructions.png"
    grid.symlink_to(outside)
    try:
        html_report.write("demo", sweep, tmp_path / "site")
    finally:
        grid.unlink()
        (sweep / "train-1" / "config.json").unlink()
    cell = (tmp_path / "site" / "cells" / "train-1.html").read_text()
    assert "note" in cell and "&lt;script&gt;" in cell and "<script>" not in cell
    assert not (tmp_path / "site" / "cells" / "score-0.png").exists()


def test_unknown_sweep_is_an_error(sweep, tmp_path):
    with pytest.raises(FileNotFoundError, match="no launched sweep named 'nope'"):
        html_report.write("nope", sweep, tmp_path)


def test_page_renders_in_chromium_with_every_image_loaded(chromium, sweep, tmp_path):
    page = html_report.write("demo", sweep, tmp_path / "site")
    dom, check, stderr = browse(chromium, page, tmp_path, screenshot=tmp_path / "site" / "screenshot.png")
    assert check["images"] >= 5 and check["broken"] == []
    assert console_lines(stderr) == []
    assert "<h2>Failures</h2>" in dom
    assert dom.count("<script") == 2  # the sort script and the check script: the hostile one stayed text
    assert (tmp_path / "site" / "screenshot.png").stat().st_size > 10_000
    if os.environ.get("NFJOBS_KEEP_SCREENSHOT"):
        shutil.copy(tmp_path / "site" / "screenshot.png", os.environ["NFJOBS_KEEP_SCREENSHOT"])


def test_the_browser_check_sees_a_broken_image(chromium, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head><body>'
                    '<img src="missing.png"></body></html>')
    _, check, _ = browse(chromium, page, tmp_path)
    assert check == {"images": 1, "broken": ["missing.png"]}


def test_launch_report_html_flag(sweep, tmp_path, capsys):
    from nfjobs import commands as launch

    assert launch.main(["report", "--sweep", "demo", "--runs-root", str(sweep), "--metric", "accuracy",
                        "--html", str(tmp_path / "site")]) == 0
    assert f"wrote {tmp_path / 'site' / 'index.html'}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # a folder of results has no sweep manifest to draw from
        launch.main(["report", "--sweep", str(sweep), "--runs-root", str(sweep), "--metric", "accuracy",
                     "--html", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and "error: --html: no launched sweep named" in capsys.readouterr().err
