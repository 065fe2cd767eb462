"""One static HTML page per sweep (no server; a few lines of inline script sort the tables):
`launch.py report --sweep S --html DIR`.

`DIR/index.html` shows every cell's state, the failures with their last error line, a search's trials and plots
(`reports.search`), then per group of the sweep its axes (`results.axes`), a sortable table of its cells (swept
values, state, final metrics, wall time, GPU-hours), its curves from metrics.jsonl against step and against wall
time (one line per cell, named by its axis values) and its metric tables grouped by the axes (pooled over seeds
only), and a page per cell (swept values, what differs from the defaults, final metrics, error, the log's tail,
pictures). Result files, configs and metrics are untrusted: every text is escaped, only keys that are plain names
become file names, and only regular PNG files inside the runs root are copied beside the page. `DIR` must be
empty or a folder an earlier report wrote (it holds `MARKER`), and nothing
is written through a symbolic link found in it.
"""

import dataclasses
import datetime as dt
import html
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from nfjobs import results, typed
from nfjobs.reports import plots, search, traits
from nfjobs.reports import tables as reporting
from nfjobs.reports.views import label, short_names
from nfjobs.kinds import load_kind
from nfjobs.store import manifest as manifests
from nfjobs.store import rows as stored
from nfjobs.store.layout import RECONSTRUCTIONS, run_dir

MARKER = ".nfjobs-report"
"""The file a report leaves in its folder: a later report may write there again."""
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
th.s{cursor:pointer}th.s:after{content:" \\2195";color:#aaa}.axes{color:#555}
"""
SORT_JS = """<script>
document.querySelectorAll("table.sortable th").forEach((th, i) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], dir = th.dataset.dir = th.dataset.dir === "a" ? "d" : "a";
  const num = t => t.trim() === "" ? NaN : Number(t);
  [...body.rows].sort((x, y) => {
    const p = x.cells[i].textContent, q = y.cells[i].textContent, m = num(p), n = num(q);
    const c = isNaN(m) || isNaN(n) ? p.localeCompare(q) : m - n;
    return dir === "a" ? c : -c;
  }).forEach(r => body.appendChild(r));
}));
</script>"""


class OutputRefused(Exception):
    """The output folder is not one a report may write into."""


def esc(value: Any) -> str:
    """`value` as escaped HTML text (floats to 4 significant decimals, missing values empty)."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    else:
        text = str(value)
    return html.escape(text, quote=True)


def html_table(df: pl.DataFrame, max_rows: int = MAX_TABLE_ROWS, *, links: dict[str, str] | None = None,
               sortable: bool = False) -> str:
    """`df` as an escaped HTML table (text columns left-aligned); more than `max_rows` rows are cut and said.
    `links`: column -> href template with `{}` for the (safe) cell value, e.g. {"key": "cells/{}.html"}."""
    text_cols = {c for c, t in df.schema.items() if t == pl.String}
    links = links or {}
    th = "t s" if sortable else "t"
    head = "".join(f'<th class="{th if c in text_cols else "s" if sortable else ""}">{esc(c)}</th>' for c in df.columns)
    body = []
    for row in df.head(max_rows).iter_rows():
        cells = []
        for c, v in zip(df.columns, row):
            text = esc(v)
            if c in links and isinstance(v, str) and safe_key(v):
                text = f'<a href="{esc(links[c].format(v))}">{text}</a>'
            cls = "t" if c in text_cols else ""
            cls += f" {esc(v)}" if c == "state" and isinstance(v, str) else ""
            cells.append(f'<td class="{cls.strip()}">{text}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    more = f"<p>{df.height - max_rows} more rows not shown.</p>" if df.height > max_rows else ""
    cls = ' class="sortable"' if sortable else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


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
    with open(src, "rb") as f:
        _write_bytes(dst, f.read())
    return True


_OUT: list[Path] = []
"""The output folder being written (set by `write`): every file goes through `_target`."""


def _target(dst: Path) -> Path:
    """`dst`, made safe to write: no folder on its way from the output folder is a symbolic link (OutputRefused),
    its folder exists, and a link in its place is removed rather than written through."""
    root = _OUT[-1] if _OUT else dst.parent
    rel = dst.relative_to(root) if dst.is_relative_to(root) else Path(dst.name)
    here = root
    for part in rel.parts[:-1]:
        here = here / part
        if here.is_symlink():
            raise OutputRefused(f"{here} is a symbolic link; the report writes nothing through one")
        here.mkdir(exist_ok=True)
    if dst.is_symlink():
        dst.unlink()
    return dst


def _write_bytes(dst: Path, data: bytes) -> None:
    dst = _target(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    if tmp.is_symlink():
        tmp.unlink()
    with open(tmp, "xb") as f:
        f.write(data)
    os.replace(tmp, dst)


def _write_text(dst: Path, text: str) -> None:
    _write_bytes(dst, text.encode("utf-8"))


def _check_output(out: Path) -> None:
    """Refuse a folder that holds anything but what an earlier report wrote (its MARKER), or is a link."""
    if out.is_symlink():
        raise OutputRefused(f"{out} is a symbolic link; name a real folder")
    if out.exists() and not out.is_dir():
        raise OutputRefused(f"{out} is a file; name a folder for the page")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise OutputRefused(f"{out} is not empty and no report wrote it (no {MARKER} in it); name an empty or "
                            "new folder, so nothing of yours is overwritten")


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


CURVES = (("step", "loss"), ("epoch", "train_loss"), ("step", "train_psnr"), ("epoch", "train_psnr"),
          ("epoch", "curve_psnr@1.0"), ("step", "accuracy"), ("epoch", "accuracy"), ("epoch", "fvu"),
          ("epoch", "loss"), ("step", "lr"))
"""(metrics.jsonl phase, metric) drawn per group where its cells logged them, in this order."""
MAX_CURVES = 4
"""Metrics drawn per group at most (each against step and against wall time, side by side)."""


def _figure(out: Path, name: str, draw, *args, caption: str = "") -> str:
    path = _target(out / "plots" / f"{name}.png")
    fig = draw(*args, path)
    fig.clear()
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="plots/{esc(name)}.png" alt="{esc(name)}">{cap}</figure>'


def _chance(rows: pl.DataFrame) -> float | None:
    """Chance accuracy where the rows' data says it (10 classes: builtin images and CIFAR-10)."""
    names = set(rows["data.name"].drop_nulls().to_list()) if "data.name" in rows.columns else set()
    roots = " ".join(map(str, rows["data.root"].drop_nulls().to_list())) if "data.root" in rows.columns else ""
    return 0.1 if names & {"builtin", "cifar10"} or "cifar10" in roots else None


def _group_section(n: int, group: str, info: Any, cells: pl.DataFrame, rows: pl.DataFrame, runs_root: Path,
                   out: Path) -> str:
    axes = list(info.axes) if info else []
    kind = info.kind if info else ""
    seeds = " Cells repeat over seeds: tables pool them (n = seeds)." if info and info.seeded else ""
    parts = [f'<h2 id="group-{n}">group {esc(group)} <small>({esc(kind)})</small></h2>',
             '<p class="axes">' + (f"Axes: {', '.join(f'<code>{esc(a)}</code>' for a in axes)}." if axes
                                   else "No axes: every cell of this group has the same config.") + f"{seeds}</p>"]
    mine = rows.filter(pl.col("group") == group) if "group" in rows.columns else rows.clear()
    table = reporting.cell_table(mine, cells, axes)
    parts.append(html_table(table.rename(short_names(axes)), links={"key": "cells/{}.html"}, sortable=True))
    values = {r["key"]: r for r in cells.iter_rows(named=True)}
    curves = {}
    for key in cells["key"].to_list():
        if safe_key(key) and run_dir(runs_root, key).metrics.is_file():
            curves[key] = results.load_metrics(runs_root, key)
    figures = []
    for phase, metric in CURVES:
        lines = {}
        for key, frame in curves.items():
            if not frame.is_empty() and metric in frame.columns and "phase" in frame.columns:
                f = frame.filter(pl.col("phase") == phase, pl.col(metric).is_not_null())
                if f.height:
                    lines[label(values[key], axes, key)] = f
        flat = all(f[metric].n_unique() == 1 for f in lines.values())  # a constant (the sae's lr) says nothing
        if lines and not flat and len(figures) < MAX_CURVES:
            figures.append(_figure(out, f"g{n}_{phase}_{re.sub(r'[^A-Za-z0-9_]', '_', metric)}", plots.curves,
                                   lines, metric, f"{group}: {metric} per {phase}, against step and wall time"))
    parts.append("".join(figures) or "<p>No curves: these cells logged no per-step or per-epoch loss, PSNR or "
                 "accuracy to metrics.jsonl.</p>")
    ok = mine.filter(pl.col("status") == "ok") if "status" in mine.columns else mine
    for metric in [m for m in reporting.HEADLINE if m in ok.columns and ok[m].drop_nulls().len()][:2]:
        final, notes = reporting.final_rows(ok, metric)
        by = reporting.by_axes(final, {group: info} if info else {}, metric) or ["group"]
        if final.is_empty():
            continue
        summary = reporting.report(final, by, metric)
        parts.append(f"<h3>{esc(metric)} by {esc(', '.join(by))}</h3><p>{esc('; '.join(notes))}</p>"
                     + html_table(summary, sortable=True))
        if "eval_context_frac" in by and metric == "psnr":
            series = [b for b in by if b != "eval_context_frac"]
            parts.append(_figure(out, f"g{n}_{metric}_context", plots.metric_vs, summary, "eval_context_frac",
                                 series, metric, f"{group}: final {metric} against the evaluation context"))
        else:
            parts.append(_figure(out, f"g{n}_{metric}", plots.metric_bars, summary, by, metric,
                                 f"{group}: final {metric}", _chance(final) if metric == "accuracy" else None))
    if kind == "score" and "row_type" in ok.columns and (ok["row_type"] == "summary").any():
        found = traits.table(ok, {group: info} if info else {})
        parts.append("<h3>trait discovery (seed 004 table)</h3>" + html_table(found, sortable=True))
        parts.append(_figure(out, f"g{n}_map_vs_train_images", plots.map_vs_train_images, found))
    return "".join(parts)


# ---------------------------------------------------------------------------------------------- cell pages
def _defaults(kind: str) -> dict[str, Any]:
    try:
        return typed.flatten(dataclasses.asdict(load_kind(kind).Config()))
    except Exception:  # noqa: BLE001 - a kind not loadable here: every field is shown
        return {}


def _log_tail(path: str, lines: int = 40) -> str:
    """The last lines of a job log the manifest names (a regular file named like one; anything else: nothing)."""
    p = Path(path) if path else None
    if p is None or not re.search(r"_log\.(err|out)$", p.name) or p.is_symlink() or not p.is_file():
        return ""
    with open(p, "rb") as f:
        f.seek(max(0, p.stat().st_size - 16_000))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def _cell_page(key: str, info: dict, state: tuple[str, str], values: dict[str, Any], axes: list[str],
               rows: pl.DataFrame, runs_root: Path, out: Path, log: dict[str, str]) -> None:
    """`cells/<key>.html`: swept values, fields that differ from the kind's defaults, final metrics, error, the
    log's tail, the cell's pictures."""
    kind = str(info.get("kind", ""))
    parts = [f'<p><a href="../index.html">back to the sweep</a></p><p>kind {esc(kind)}, group '
             f'{esc(info.get("group"))}, state <b class="{esc(state[0]).replace(" ", "")}">{esc(state[0])}</b></p>']
    if axes:
        parts.append("<h2>Swept values</h2>" + html_table(pl.DataFrame(
            {"axis": axes, "value": [esc_text(values.get(a)) for a in axes]}, schema={"axis": pl.String, "value": pl.String})))
    config_file = run_dir(runs_root, key).config
    flat = None
    if config_file.is_file() and not config_file.is_symlink() and _inside(config_file, runs_root):
        try:
            loaded = json.loads(config_file.read_text())
            loaded = loaded.get("config", loaded) if isinstance(loaded, dict) else None
            flat = typed.flatten(loaded) if isinstance(loaded, dict) else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            parts.append("<p>config.json is not valid JSON.</p>")
    mine = rows.filter(pl.col("key") == key) if "key" in rows.columns else pl.DataFrame()
    if flat is None and not mine.is_empty():
        cols = config_columns(kind, mine.columns)
        flat = mine.select(cols).row(0, named=True) if cols else None
    if flat is not None:
        defaults = _defaults(kind)
        differ = {k: v for k, v in flat.items() if k not in axes and (k not in defaults or
                                                                     json.dumps(v, default=str) != json.dumps(rows_value(defaults[k]), default=str))}
        parts.append("<h2>Config: what differs from the defaults</h2>" + (html_table(pl.DataFrame(
            {"field": list(differ), "value": [esc_text(v) for v in differ.values()]},
            schema={"field": pl.String, "value": pl.String})) if differ else "<p>Nothing: the kind's defaults.</p>"))
    if not mine.is_empty():
        table = reporting.cell_table(mine, pl.DataFrame({"key": [key], "state": [state[0]]}), [])
        parts.append("<h2>Final metrics</h2>" + html_table(table.drop("key", "state")))
    if not mine.is_empty() and "error" in mine.columns:
        text = next((e for e in mine["error"].to_list() if e), "")
        parts.append(f"<h2>Error</h2><pre>{esc(text)}</pre>" if text else "")
    tail = _log_tail(log.get("stderr", ""))
    if tail:
        parts.append(f"<h2>Log (last lines of {esc(log.get('stderr'))})</h2><pre>{esc(tail)}</pre>")
    if copy_png(run_dir(runs_root, key) / RECONSTRUCTIONS, out / "cells" / f"{key}.png", runs_root):
        parts.append(f'<h2>Reconstructions</h2><img src="{esc(key)}.png" alt="reconstructions of {esc(key)}">')
    if _copy_pictures(run_dir(runs_root, key) / "pictures", out / "cells" / f"{key}_pictures", runs_root):
        parts.append(f'<h2>Pictures</h2><p><a href="{esc(key)}_pictures/index.html">each trait\'s prototype: its '
                     "top test images</a></p>")
    _write_text(out / "cells" / f"{key}.html", _page(f"cell {key}", "".join(parts)))


def rows_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value


def esc_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _copy_pictures(src: Path, dst: Path, runs_root: Path) -> bool:
    """A score cell's trait pictures (`pictures/index.html` and its PNGs) beside the page."""
    index = src / "index.html"
    if src.is_symlink() or not index.is_file() or index.is_symlink() or not _inside(index, runs_root):
        return False
    for png in sorted(src.glob("*.png")):
        copy_png(png, dst / png.name, runs_root)
    _write_bytes(dst / "index.html", index.read_bytes())
    return True


def _page(title: str, body: str, script: str = "") -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{body}{script}</body></html>\n')


def write(sweep: str, runs_root: Path | str, out_dir: Path | str) -> Path:
    """Write the page of `sweep` (its name, or its .toml) under `out_dir`; returns `out_dir/index.html`.
    OutputRefused for a folder that is not empty and holds no MARKER, or a link on the way."""
    runs_root, out = Path(runs_root), Path(out_dir)
    name = results.sweep_name(sweep)
    manifest = manifests.read(runs_root, name)
    if not manifest["cells"]:
        raise FileNotFoundError(f"no launched sweep named {name!r} under {runs_root}")
    _check_output(out)
    out.mkdir(parents=True, exist_ok=True)
    _OUT.append(out)
    try:
        _write_text(out / MARKER, "written by launch.py report --html; a later report may replace this folder's files\n")
        return _write_page(name, manifest, runs_root, out)
    finally:
        _OUT.pop()


def _write_page(name: str, manifest: dict, runs_root: Path, out: Path) -> Path:
    cells: dict[str, dict] = {str(k): v if isinstance(v, dict) else {} for k, v in manifest["cells"].items()}
    states = {key: outcome(runs_root, key) if safe_key(key) else ("no result", "") for key in cells}
    axes = results.axes(name, runs_root)
    swept = results.swept(name, runs_root)
    rows = reporting.with_axes(results.load(name, runs_root, warn=False).collect(), swept)
    table = swept.with_columns(pl.col("key").replace_strict(
        {k: s[0] for k, s in states.items()}, default="no result", return_dtype=pl.String).alias("state"))
    groups = list(dict.fromkeys(str(info.get("group", "")) for info in cells.values()))
    toc = "<p>Groups: " + ", ".join(f'<a href="#group-{i}">{esc(g)}</a>' for i, g in enumerate(groups)) + "</p>"
    sections = [_group_section(i, g, axes.get(g), table.filter(pl.col("group") == g), rows, runs_root, out)
                for i, g in enumerate(groups)]
    for key, info in cells.items():
        if safe_key(key):
            group = str(info.get("group", ""))
            _cell_page(key, info, states[key], next(iter(table.filter(pl.col("key") == key).iter_rows(named=True)), {}),
                       list(axes[group].axes) if group in axes else [], rows, runs_root, out,
                       manifest.get("logs", {}).get(key, {}))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = (f"<p>Runs root <code>{esc(runs_root)}</code>, written {esc(stamp)}. Tables group by each group's axes "
            "and pool only over seeds; click a column to sort.</p>" + _status_section(cells, states)
            + _failures_section(cells, states) + search.page_section(name, runs_root, out, _figure, html_table) + toc
            + "".join(sections))
    page = out / "index.html"
    _write_text(page, _page(f"sweep {name}", body, SORT_JS))
    return page
