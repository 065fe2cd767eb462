"""One static HTML page per sweep (no server, no script): `launch.py report --sweep S --html DIR`.

`DIR/index.html` shows the state of every cell (from its result file), the failures with their last error line,
the summary tables (train PSNR, probe accuracy, seed-004 mAP, and the rows of any other kind), the figures of
`nfjobs.reports.plots`, every cell's reconstruction grid and a page per cell with its config. Result files, configs and
metrics are untrusted: every text is escaped, only keys that are plain names become file names, and only regular
PNG files inside the runs root are copied beside the page.
"""

import datetime as dt
import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from nfjobs import results
from nfjobs.reports import plots
from nfjobs.reports import tables as reporting
from nfjobs.kinds import load_kind
from nfjobs.store import manifest as manifests
from nfjobs.store import rows as stored
from nfjobs.store.layout import RECONSTRUCTIONS, run_dir

SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_TABLE_ROWS = 500
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}th{background:#f2f2f2}
td.t,th.t{text-align:left}.ok{color:#1a7f37}.failed,.blocked,.cancelled{color:#c62828}.noresult{color:#888}
img{max-width:100%;border:1px solid #ddd;margin:.25em 0}figure{display:inline-block;margin:0 1em 1em 0}
pre{background:#f6f6f6;padding:.5em;overflow:auto}code{font-size:.9em}
"""


def esc(value: Any) -> str:
    """`value` as escaped HTML text (floats to 4 significant decimals, missing values empty)."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    else:
        text = str(value)
    return html.escape(text, quote=True)


def html_table(df: pl.DataFrame, max_rows: int = MAX_TABLE_ROWS) -> str:
    """`df` as an escaped HTML table (text columns left-aligned); more than `max_rows` rows are cut and said."""
    text_cols = {c for c, t in df.schema.items() if t == pl.String}
    head = "".join(f'<th class="{"t" if c in text_cols else ""}">{esc(c)}</th>' for c in df.columns)
    body = []
    for row in df.head(max_rows).iter_rows():
        cells = "".join(f'<td class="{"t" if c in text_cols else ""}">{esc(v)}</td>' for c, v in zip(df.columns, row))
        body.append(f"<tr>{cells}</tr>")
    more = f"<p>{df.height - max_rows} more rows not shown.</p>" if df.height > max_rows else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def safe_key(key: str) -> bool:
    """Whether `key` may name a file here (a cell key is a content hash; anything else is refused)."""
    return bool(SAFE_KEY.fullmatch(key)) and ".." not in key


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def copy_png(src: Path, dst: Path, runs_root: Path) -> bool:
    """Copy `src` to `dst` when it is a regular PNG file inside `runs_root` (no links out, no other content)."""
    if src.is_symlink() or not src.is_file() or not _inside(src, runs_root):
        return False
    with open(src, "rb") as f:
        if f.read(len(PNG_MAGIC)) != PNG_MAGIC:
            return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return True


def outcome(runs_root: Path, key: str) -> tuple[str, str]:
    """(state, last error line) of a cell from its result file; `no result` when it has none."""
    found = getattr(results, "cell_outcome", None)
    if found is not None:
        got = found(runs_root, key)
        return got if got is not None else ("no result", "")
    state = stored.status(runs_root, key)
    if state is None:
        return "no result", ""
    if state == "ok":
        return "ok", ""
    try:
        errors = pl.read_parquet(run_dir(runs_root, key).result, columns=["error"])["error"].drop_nulls()
    except Exception:  # noqa: BLE001 - an unreadable error column leaves the line empty
        errors = pl.Series([], dtype=pl.String)
    lines = [x.strip() for x in (errors[0] if len(errors) else "").splitlines() if x.strip()]
    return state, lines[-1] if lines else ""


def config_columns(kind: str, columns: list[str]) -> list[str]:
    """The result columns of `kind` that are config fields (from its Config's defaults), in table order."""
    try:
        names = set(stored.config_columns(load_kind(kind).Config()))
    except Exception:  # noqa: BLE001 - a kind that cannot be loaded here: show no config columns
        return []
    return [c for c in columns if c in names]


# ---------------------------------------------------------------------------------------------- sections
def _status_section(cells: dict[str, dict], states: dict[str, tuple[str, str]]) -> str:
    counts = pl.DataFrame(
        [{"kind": str(info.get("kind", "")), "state": states[key][0]} for key, info in cells.items()],
        schema={"kind": pl.String, "state": pl.String},
    )
    total = counts.group_by("state").len().sort("state")
    line = ", ".join(f'<span class="{esc(s).replace(" ", "")}">{esc(s)} {n}</span>' for s, n in total.rows())
    per_kind = counts.group_by("kind", "state").len().pivot(on="state", index="kind", values="len").sort("kind")
    return f"<h2>Status</h2><p>{len(cells)} cells: {line}</p>{html_table(per_kind.fill_null(0))}"


def _failures_section(cells: dict[str, dict], states: dict[str, tuple[str, str]]) -> str:
    bad = [(key, info) for key, info in cells.items() if states[key][0] not in ("ok", "no result")]
    if not bad:
        return "<h2>Failures</h2><p>None.</p>"
    rows = "".join(
        f'<tr><td class="t"><a href="cells/{esc(key)}.html">{esc(key)}</a></td><td class="t">{esc(info.get("group"))}</td>'
        f'<td class="t">{esc(info.get("kind"))}</td><td class="t {esc(states[key][0])}">{esc(states[key][0])}</td>'
        f'<td class="t"><code>{esc(states[key][1])}</code></td></tr>'
        for key, info in bad if safe_key(key)
    )
    return ('<h2>Failures</h2><table><tr><th class="t">cell</th><th class="t">group</th><th class="t">kind</th>'
            f'<th class="t">state</th><th class="t">last error line</th></tr>{rows}</table>')


def _with_fields(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.with_columns(plots.field_labels(rows))


def _tables_and_figures(rows: pl.DataFrame, runs_root: Path, out: Path) -> tuple[str, str]:
    """HTML of the summary tables and of the figures (written to `out/plots/`) for the kinds present."""
    from nfjobs.reports.probes import summary as probe_summary
    from nfjobs.reports.traits import table as score_table

    tables, figures = [], []
    kinds = sorted(rows["kind"].drop_nulls().unique().to_list()) if "kind" in rows.columns else []
    ok = rows.filter(pl.col("status") == "ok") if "status" in rows.columns else rows

    def figure(name: str, draw, *args) -> None:
        path = out / "plots" / f"{name}.png"
        fig = draw(*args, path)
        fig.clear()
        figures.append(f'<figure><img src="plots/{name}.png" alt="{esc(name)}"></figure>')

    for kind in kinds:
        mine = ok.filter(pl.col("kind") == kind)
        if mine.is_empty():
            continue
        if kind == "train" and {"split", "psnr", "eval_context_frac"} <= set(mine.columns):
            val = _with_fields(mine.filter(pl.col("split") == "val"))
            if not val.is_empty():
                tables.append("<h3>train: val PSNR (dB)</h3>"
                              + html_table(reporting.report(val, ["field", "eval_context_frac"], "psnr")))
                figure("psnr_vs_context", plots.psnr_vs_context, mine)
            curves = {}
            for key in mine["key"].unique().sort().to_list():
                if safe_key(key) and run_dir(runs_root, key).metrics.exists():
                    label = f"{_with_fields(mine.filter(pl.col('key') == key))['field'][0]} {key[:8]}"
                    curves[label] = results.load_metrics(runs_root, key, phase="epoch")
            if any(not c.is_empty() for c in curves.values()):
                figure("psnr_vs_wall", plots.psnr_vs_wall, curves)
        elif kind == "probe" and {"representation", "context", "probe", "accuracy"} <= set(mine.columns):
            table = probe_summary(mine)
            tables.append("<h3>probe: val accuracy (mean over seeds)</h3>" + html_table(table))
            figure("probe_accuracy", plots.probe_accuracy, table)
        elif kind == "score" and "row_type" in mine.columns:
            table = score_table(mine)
            tables.append("<h3>score: trait discovery (seed 004)</h3>" + html_table(table))
            figure("map_vs_train_images", plots.map_vs_train_images, table)
        else:
            tables.append(f"<h3>{esc(kind)}: result rows</h3>" + html_table(_plain_rows(mine, kind)))
    return "<h2>Tables</h2>" + ("".join(tables) or "<p>No finished cells yet.</p>"), \
        "<h2>Figures</h2>" + ("".join(figures) or "<p>None for these kinds.</p>")


def _plain_rows(rows: pl.DataFrame, kind: str) -> pl.DataFrame:
    """Rows of a kind without its own table: the config columns that vary, then its metric columns."""
    rows = rows.select([c for c in rows.columns if rows[c].null_count() < rows.height])
    cfg = config_columns(kind, rows.columns)
    varying = [c for c in cfg if rows[c].cast(pl.String).n_unique() > 1]
    fixed = {"sweep", "key", "kind", "group", "status", "error", *cfg}
    metrics = [c for c in rows.columns if c not in fixed and not c.startswith("run.")]
    return rows.select(["key", *varying, *metrics])


def _cells_section(cells: dict[str, dict], states: dict[str, tuple[str, str]], rows: pl.DataFrame,
                   runs_root: Path, out: Path) -> str:
    items = []
    for key, info in cells.items():
        if not safe_key(key):
            continue
        state = states[key][0]
        _cell_page(key, info, state, rows, runs_root, out)
        grid = ""
        if copy_png(run_dir(runs_root, key) / RECONSTRUCTIONS, out / "cells" / f"{key}.png", runs_root):
            grid = (f'<figure><img src="cells/{esc(key)}.png" alt="reconstructions of {esc(key)}">'
                    f"<figcaption>{esc(key)}: reconstruction grid</figcaption></figure>")
        items.append(f'<tr><td class="t"><a href="cells/{esc(key)}.html">{esc(key)}</a></td>'
                     f'<td class="t">{esc(info.get("kind"))}</td><td class="t">{esc(info.get("group"))}</td>'
                     f'<td class="t {esc(state).replace(" ", "")}">{esc(state)}</td><td class="t">{grid}</td></tr>')
    return ('<h2>Cells</h2><table><tr><th class="t">cell (config)</th><th class="t">kind</th><th class="t">group</th>'
            f'<th class="t">state</th><th class="t">reconstructions</th></tr>{"".join(items)}</table>')


def _cell_page(key: str, info: dict, state: str, rows: pl.DataFrame, runs_root: Path, out: Path) -> None:
    """`cells/<key>.html`: the cell's config (its config.json, else the config columns of its result rows)."""
    config_file = run_dir(runs_root, key).config
    body = ""
    if config_file.is_file() and not config_file.is_symlink() and _inside(config_file, runs_root):
        try:
            body = f"<h2>config.json</h2><pre>{esc(json.dumps(json.loads(config_file.read_text()), indent=1))}</pre>"
        except (ValueError, UnicodeDecodeError):
            body = "<p>config.json is not valid JSON.</p>"
    mine = rows.filter(pl.col("key") == key) if "key" in rows.columns else pl.DataFrame()
    if not body and not mine.is_empty():
        cols = config_columns(str(info.get("kind", "")), mine.columns)
        pairs = mine.select(cols).row(0, named=True) if cols else {}
        body = "<h2>Config (from the result file)</h2>" + html_table(
            pl.DataFrame({"field": list(pairs), "value": [None if v is None else str(v) for v in pairs.values()]},
                         schema={"field": pl.String, "value": pl.String}))
    if not body:
        body = "<p>No config recorded yet (no result file).</p>"
    error = ""
    if not mine.is_empty() and "error" in mine.columns:
        text = next((e for e in mine["error"].to_list() if e), "")
        error = f"<h2>Error</h2><pre>{esc(text)}</pre>" if text else ""
    states_line = f'<p>kind {esc(info.get("kind"))}, group {esc(info.get("group"))}, state <b>{esc(state)}</b></p>'
    page = _page(f"cell {key}", f'<p><a href="../index.html">back to the sweep</a></p>{states_line}{body}{error}')
    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / "cells" / f"{key}.html").write_text(page, encoding="utf-8")


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{body}</body></html>\n')


def write(sweep: str, runs_root: Path | str, out_dir: Path | str) -> Path:
    """Write the page of `sweep` (its name, or its .toml) under `out_dir`; returns `out_dir/index.html`."""
    runs_root, out = Path(runs_root), Path(out_dir)
    name = results.sweep_name(sweep)
    manifest = manifests.read(runs_root, name)
    if not manifest["cells"]:
        raise FileNotFoundError(f"no launched sweep named {name!r} under {runs_root}")
    cells: dict[str, dict] = {str(k): v if isinstance(v, dict) else {} for k, v in manifest["cells"].items()}
    states = {key: outcome(runs_root, key) if safe_key(key) else ("no result", "") for key in cells}
    rows = results.load(name, runs_root, warn=False).collect()
    out.mkdir(parents=True, exist_ok=True)
    tables, figures = _tables_and_figures(rows, runs_root, out) if not rows.is_empty() else ("", "")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = (f"<p>Runs root <code>{esc(runs_root)}</code>, written {esc(stamp)}.</p>"
            + _status_section(cells, states) + _failures_section(cells, states) + tables + figures
            + _cells_section(cells, states, rows, runs_root, out))
    page = out / "index.html"
    page.write_text(_page(f"sweep {name}", body), encoding="utf-8")
    return page

