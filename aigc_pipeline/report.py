"""`report.html`: one self-contained page to look at a run (`aigc report OUT` rebuilds it).

It is built from what the output folder holds: `results.jsonl`, `groups.jsonl`, `manifest.json`
(and the input file the manifest names, for the inputs of each row). It shows a summary (counts,
time, a per-stage table), then a gallery: one card per row with its inputs, texts, image, audio
player, flags and error, with buttons to show only failed, filtered or flagged rows; then one
card per group when a stage aggregates. Artifacts are linked by their relative path, so the
folder can be moved or zipped as a whole.

Every value from a row is user data: it is HTML-escaped, artifact links are kept only when they
are plain relative paths under `artifacts/`, and a Content-Security-Policy with a per-report
nonce lets only the report's own script run.
"""

from __future__ import annotations

import html
import json
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .manifest import read_manifest
from .sinks import GROUPS_FILE, RESULTS_FILE, write_atomic

REPORT_FILE = "report.html"
MAX_CARDS = 1000  # a gallery of more cards is too slow to open; results.jsonl has every row
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
AUDIO_SUFFIXES = (".wav", ".mp3", ".ogg", ".flac")
_SAFE_ARTIFACT = re.compile(r"^artifacts/[A-Za-z0-9_][A-Za-z0-9_./-]*$")
STATUS_ORDER = ("done", "filtered", "failed", "rejected", "not_run")


def write_report(out_dir: Path) -> Path:
    """(Re)build `report.html` in `out_dir` from the files there."""
    results = _read_jsonl(out_dir / RESULTS_FILE)
    groups = _read_jsonl(out_dir / GROUPS_FILE)
    manifest = read_manifest(out_dir) or {}
    shown = _pick(results)
    inputs = _read_inputs(manifest, max((r.get("row", 0) for r in shown), default=-1) + 1)
    path = out_dir / REPORT_FILE
    write_atomic(path, [render(results, shown, groups, manifest, inputs)])
    return path


def render(
    results: list[dict[str, Any]],
    shown: list[dict[str, Any]],
    groups: list[dict[str, Any]],
    manifest: dict[str, Any],
    inputs: dict[int, dict[str, Any]],
) -> str:
    nonce = secrets.token_hex(16)
    pipeline = (manifest.get("pipeline") or {}).get("name", "?")
    parts = [_HEAD.format(title=_e(f"aigc report: {pipeline}"), nonce=nonce), _summary(results, manifest),
             _stage_table(manifest), _gallery(results, shown, inputs)]
    if groups:
        parts.append(_groups(groups))
    parts.append(f"<script nonce=\"{nonce}\">{_SCRIPT}</script></body></html>\n")
    return "\n".join(parts)


def _pick(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most MAX_CARDS rows: every row that did not pass first (they need looking at), in row order."""
    if len(results) <= MAX_CARDS:
        return results
    trouble = [r for r in results if r.get("status") != "done"][:MAX_CARDS]
    rest = [r for r in results if r.get("status") == "done"][: MAX_CARDS - len(trouble)]
    return sorted(trouble + rest, key=lambda r: r.get("row", 0))


def _summary(results: list[dict[str, Any]], manifest: dict[str, Any]) -> str:
    counts = dict.fromkeys(STATUS_ORDER, 0)
    for result in results:
        status = str(result.get("status"))
        counts[status] = counts.get(status, 0) + 1
    flagged = sum(1 for r in results if r.get("flags"))
    badges = "".join(f'<span class="badge {_e(s)}">{_e(s)}: <b>{n}</b></span>' for s, n in counts.items() if n)
    if flagged:
        badges += f'<span class="badge flagged">flagged: <b>{flagged}</b></span>'
    pipeline = manifest.get("pipeline") or {}
    facts = [("pipeline", pipeline.get("name")), ("file", pipeline.get("file")), ("status", manifest.get("status")),
             ("started", manifest.get("started_at")), ("ended", manifest.get("ended_at")),
             ("time", f"{manifest['seconds']:.2f}s" if isinstance(manifest.get("seconds"), (int, float)) else None),
             ("seed", manifest.get("seed")), ("devices", ", ".join(manifest.get("devices") or [])),
             ("error", manifest.get("error"))]
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts if v not in (None, ""))
    return (f'<h1>{_e(pipeline.get("name", "run"))}</h1><section id="summary">'
            f'<p id="row-count" data-count="{len(results)}">{len(results)} rows</p><p>{badges}</p>'
            f'<table class="facts">{rows}</table></section>')


_STAGE_COLUMNS = ("done", "filtered", "failed", "flagged", "cached", "batches")


def _stage_table(manifest: dict[str, Any]) -> str:
    stages = manifest.get("stages") or {}
    if not stages:
        return ""
    names = ("stage", "type", "device", *_STAGE_COLUMNS, "time", "load", "peak memory")
    head = "".join(f"<th>{c}</th>" for c in names)
    body = []
    for stage_id, stats in stages.items():
        cells = [_e(stage_id), _e(stats.get("type_name")), _e(stats.get("device"))]
        cells += [_e(stats.get(c, 0)) for c in _STAGE_COLUMNS]
        cells += [f"{float(stats.get('seconds') or 0):.2f}s", f"{float(stats.get('load_seconds') or 0):.2f}s",
                  _e(_bytes((stats.get("peak_memory") or {}).get("bytes")))]
        body.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return f'<section><h2>stages</h2><table class="stages"><tr>{head}</tr>{"".join(body)}</table></section>'


def _gallery(results: list[dict[str, Any]], shown: list[dict[str, Any]], inputs: dict[int, dict[str, Any]]) -> str:
    buttons = "".join(f'<button data-show="{s}">{s}</button>'
                      for s in ("all", "done", "failed", "filtered", "flagged", "rejected", "not_run"))
    note = "" if len(shown) == len(results) else (
        f'<p class="note">showing {len(shown)} of {len(results)} rows (every row that did not pass first); '
        "results.jsonl has all of them</p>")
    cards = "".join(_card(r, inputs.get(r.get("row", -1))) for r in shown)
    return (f'<section id="rows"><h2>rows</h2><p class="filters">{buttons}</p>{note}'
            f'<div class="gallery" data-cards="{len(shown)}">{cards}</div></section>'
            '<p id="images-loaded" data-loaded="" data-total=""></p>')


def _card(result: dict[str, Any], inputs: dict[str, Any] | None) -> str:
    status = str(result.get("status", "?"))
    flags = result.get("flags") or []
    title = f"row {result.get('row')} · line {result.get('line')}"
    body = [_values("inputs", inputs), _values("outputs", result.get("outputs"))]
    error = result.get("error")
    if isinstance(error, dict):
        body.append(f'<p class="error"><b>{_e(error.get("stage"))}</b>: {_e(error.get("reason"))}</p>')
    body += [f'<p class="flag">⚑ {_e(f.get("stage"))}: {_e(f.get("reason"))}</p>'
             for f in flags if isinstance(f, dict)]
    return (f'<article class="card {_e(status)}" data-status="{_e(status)}" data-flagged="{1 if flags else 0}">'
            f'<header>{_e(title)} <span class="badge {_e(status)}">{_e(status)}</span></header>'
            f'{"".join(body)}</article>')


def _groups(groups: list[dict[str, Any]]) -> str:
    cards = []
    for group in groups[:MAX_CARDS]:
        status = str(group.get("status", "?"))
        members = group.get("members") or []
        error = group.get("error")
        reason = (f'<p class="error">{_e(error.get("stage"))}: {_e(error.get("reason"))}</p>'
                  if isinstance(error, dict) else "")
        cards.append(f'<article class="card group {_e(status)}" data-status="{_e(status)}"><header>group '
                     f'{_e(group.get("group"))} · {len(members)} rows <span class="badge {_e(status)}">{_e(status)}'
                     f'</span></header>{_values("outputs", group.get("outputs"))}{reason}</article>')
    return f'<section id="groups"><h2>groups ({len(groups)})</h2><div class="gallery">{"".join(cards)}</div></section>'


def _values(kind: str, values: Any) -> str:
    if not isinstance(values, dict) or not values:
        return ""
    items = "".join(f"<dt>{_e(name)}</dt><dd>{_value(value)}</dd>" for name, value in values.items())
    return f'<dl class="{kind}">{items}</dl>'


def _value(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        return _artifact(value)
    if isinstance(value, str):
        return f'<span class="text">{_e(value)}</span>'
    return f"<code>{_e(json.dumps(value, ensure_ascii=False, default=str))}</code>"


def _artifact(value: dict[str, Any]) -> str:
    path = value["path"]
    meta = {k: v for k, v in value.items() if k != "path" and not isinstance(v, (dict, list))}
    info = f'<small>{_e(", ".join(f"{k}={v}" for k, v in list(meta.items())[:6]))}</small>'
    if not _SAFE_ARTIFACT.match(path) or ".." in path.split("/"):
        return f'<span class="text">{_e(path)}</span> {info}'
    href = _e(quote(path))
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return f'<a href="{href}"><img src="{href}" alt="{_e(path)}"></a>{info}'
    if suffix in AUDIO_SUFFIXES:
        return f'<audio controls preload="none" src="{href}"></audio><a href="{href}">{_e(path)}</a> {info}'
    return f'<a href="{href}">{_e(path)}</a> {info}'


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _read_inputs(manifest: dict[str, Any], rows: int) -> dict[int, dict[str, Any]]:
    """Each shown row's input values, from the input file the manifest names ({} if it is gone)."""
    from .errors import AigcError
    from .sources import read_rows

    source = manifest.get("input") or {}
    path, columns = source.get("path"), source.get("columns")
    if not rows or not isinstance(path, str) or not isinstance(columns, dict) or not Path(path).is_file():
        return {}
    try:
        return {row.index: row.values or {} for row in read_rows(path, columns, rows)}
    except (AigcError, OSError, ValueError):
        return {}


def _bytes(count: Any) -> str:
    if not isinstance(count, (int, float)) or count <= 0:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return ""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: data:; \
media-src 'self' file:; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }}
h1 {{ margin: 0 0 .3em; }} h2 {{ margin: 1.2em 0 .4em; }}
table {{ border-collapse: collapse; background: #fff; }}
th, td {{ border: 1px solid #ddd; padding: .25em .6em; text-align: left; }}
table.stages td:nth-child(n+4) {{ text-align: right; }}
.badge {{ display: inline-block; padding: .05em .5em; margin-right: .4em; border-radius: .8em; background: #eee; }}
.badge.done {{ background: #d8f3dc; }} .badge.failed {{ background: #ffd6d6; }}
.badge.filtered {{ background: #fff1c1; }} .badge.flagged {{ background: #e7dcff; }}
.badge.rejected, .badge.not_run {{ background: #e2e2e2; }}
.filters button {{ margin-right: .3em; padding: .2em .7em; border: 1px solid #bbb; background: #fff; cursor: pointer; }}
.filters button.on {{ background: #333; color: #fff; }}
.gallery {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: .8em; }}
.card {{ background: #fff; border: 1px solid #ddd; border-left: 4px solid #8c8; padding: .6em;
        overflow-wrap: anywhere; }}
.card.failed {{ border-left-color: #d55; }} .card.filtered {{ border-left-color: #db3; }}
.card.rejected, .card.not_run {{ border-left-color: #999; }}
.card header {{ font-weight: 600; margin-bottom: .3em; }}
dl {{ margin: .2em 0; }} dt {{ color: #666; font-size: 12px; }} dd {{ margin: 0 0 .3em; white-space: pre-wrap; }}
dl.inputs {{ border-bottom: 1px dashed #ddd; }}
img {{ max-width: 100%; image-rendering: pixelated; min-width: 64px; display: block; }}
audio {{ width: 100%; }} .error {{ color: #a00; }} .flag {{ color: #639; }} small {{ color: #777; }}
</style></head><body>"""

_SCRIPT = """
(function () {
  var buttons = document.querySelectorAll('button[data-show]');
  buttons.forEach(function (button) {
    button.addEventListener('click', function () {
      var want = button.getAttribute('data-show');
      document.querySelectorAll('#rows .card').forEach(function (card) {
        var show = want === 'all' || card.getAttribute('data-status') === want ||
          (want === 'flagged' && card.getAttribute('data-flagged') === '1');
        card.hidden = !show;
      });
      buttons.forEach(function (other) { other.classList.toggle('on', other === button); });
    });
  });
  window.addEventListener('load', function () {
    var images = Array.prototype.slice.call(document.images);
    var loaded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; }).length;
    var line = document.getElementById('images-loaded');
    line.setAttribute('data-loaded', String(loaded));
    line.setAttribute('data-total', String(images.length));
    line.textContent = loaded + ' of ' + images.length + ' images loaded';
  });
})();
"""
