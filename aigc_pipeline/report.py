"""`report.html`: the page to look at a run (`aigc report OUT` rebuilds it; `--bundle` makes one to mail).

Built from what the output folder holds: `results.jsonl` (read once, line by line: see
`report_scan.py` for which rows a large run shows), `groups.jsonl`, `manifest.json`, and the
input file the manifest names (for the inputs of the rows shown). It shows a summary (counts,
time, a warning when the models had random weights), the per-stage table (every counter the
stages report), then a gallery of cards (`gallery.py`) with status and flag filters, a search box
and pages; a click on an image opens it large. The page works offline: its style and script are
inline, artifacts are linked by relative path (the folder can be moved or zipped as a whole), or
embedded as data: URIs in the bundle (`report-bundle.html`), which works alone.

Every value from a row is user data: it is HTML-escaped, and a Content-Security-Policy with a
per-page nonce lets only the page's own script run.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .gallery import PAGE_SIZE, Linker, card, data_uri_linker, e, relative_link
from .manifest import read_manifest
from .report_scan import DEFAULT_ROWS, STATUS_ORDER, Scan, read_records, scan_results
from .sinks import GROUPS_FILE, RESULTS_FILE, write_atomic

REPORT_FILE = "report.html"
BUNDLE_FILE = "report-bundle.html"
MAX_GROUP_CARDS = 1000
_CSP = ("default-src 'none'; img-src 'self' file: data:; media-src 'self' file: data:; "
        "style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'{connect}")


@dataclass
class Page:
    """How one page is built: where artifacts come from, and what the review app adds."""

    link: Linker = relative_link
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    script: str = "report.js"  # asset files, joined in one <script>
    extra_script: str = ""
    head: str = ""  # extra <meta> lines (the review app's session token)
    connect: bool = False  # the page may call its own server (the review app)
    card_extra: Any = None  # record -> extra HTML inside its card (the review controls)


def write_report(
    out_dir: Path, rows: int | None = DEFAULT_ROWS, bundle: bool = False, scan: Scan | None = None
) -> Path:
    """(Re)build `report.html` (or the self-contained `report-bundle.html`) in `out_dir`; `scan`: of
    its results.jsonl already made (a run's, as it wrote the file), else the file is read."""
    scan = scan if scan is not None else scan_results(out_dir / RESULTS_FILE, rows)
    manifest = read_manifest(out_dir) or {}
    page = Page(link=data_uri_linker(out_dir)) if bundle else Page()
    text = render(scan, manifest, read_inputs(manifest, scan.shown), _groups(out_dir), page)
    path = out_dir / (BUNDLE_FILE if bundle else REPORT_FILE)
    write_atomic(path, [text])
    return path


def render(scan: Scan, manifest: dict[str, Any], inputs: dict[int, dict[str, Any]],
           groups: list[dict[str, Any]], page: Page) -> str:
    pipeline = (manifest.get("pipeline") or {}).get("name", "?")
    parts = [_head(f"aigc report: {pipeline}", page), _summary(scan, manifest), _random_models(manifest),
             _stage_table(manifest), _gallery(scan, inputs, page)]
    if groups:
        parts.append(_groups_section(groups, page))
    script = "".join(_asset(name) for name in page.script.split()) + page.extra_script
    parts.append(f'<div id="lightbox" hidden></div><script nonce="{page.nonce}">{script}</script></body></html>\n')
    return "\n".join(parts)


def _head(title: str, page: Page) -> str:
    body = '<body data-review="1">' if page.connect else "<body>"
    csp = _CSP.format(nonce=page.nonce, connect="; connect-src 'self'" if page.connect else "")
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f'{page.head}\n'
            f'<title>{e(title)}</title>\n<style nonce="{page.nonce}">{_asset("report.css")}</style></head>'
            f"{body}")


def _summary(scan: Scan, manifest: dict[str, Any]) -> str:
    badges = "".join(f'<span class="badge {e(s)}">{e(s)}: <b>{n}</b></span>' for s, n in scan.counts.items() if n)
    if scan.flagged:
        badges += f'<span class="badge flagged">flagged: <b>{scan.flagged}</b></span>'
    badges += "".join(f'<span class="badge review-{e(s)}">{e(s)}: <b>{n}</b></span>'
                      for s, n in sorted(scan.reviews.items()))
    pipeline = manifest.get("pipeline") or {}
    seconds = manifest.get("seconds")
    facts = [("pipeline", pipeline.get("name")), ("file", pipeline.get("file")), ("status", manifest.get("status")),
             ("started", manifest.get("started_at")), ("ended", manifest.get("ended_at")),
             ("time", f"{seconds:.2f}s" if isinstance(seconds, (int, float)) else None),
             ("seed", manifest.get("seed")), ("devices", ", ".join(manifest.get("devices") or [])),
             ("executor", manifest.get("executor")), ("error", manifest.get("error"))]
    items = "".join(f"<li><span>{e(k)}</span> {e(v)}</li>" for k, v in facts if v not in (None, ""))
    description = (manifest.get("pipeline") or {}).get("description")
    return (f'<header class="top"><h1>{e(pipeline.get("name", "run"))}</h1>'
            f'{f"<p>{e(description)}</p>" if description else ""}</header><section id="summary">'
            f'<p id="row-count" data-count="{scan.total}">{scan.total} rows</p><p class="badges">{badges}</p>'
            f'<ul class="facts">{items}</ul></section>')


def _random_models(manifest: dict[str, Any]) -> str:
    """An honest banner when some stage ran a model with random weights (`aigc models make-tiny`)."""
    stages = manifest.get("random_weights") or []
    if not stages:
        return ""
    names = ", ".join(e(s) for s in stages)
    return (f'<p class="random" id="random-models">These results come from models with <b>random weights</b> '
            f'(stages: {names}; built by <code>aigc models make-tiny</code>): the texts, images and voices '
            "are noise, not content. Point <code>model:</code> at real models for real results.</p>")


_STAGE_COLUMNS = ("done", "filtered", "failed", "flagged", "cached", "batches")
_NOT_COUNTERS = {*_STAGE_COLUMNS, "type_name", "device", "seconds", "load_seconds", "peak_memory", "peak_memory_bytes",
                 "peak_rss_bytes", "memory_bytes", "unloads", "made_by"}


def _stage_table(manifest: dict[str, Any]) -> str:
    stages = manifest.get("stages") or {}
    if not stages:
        return ""
    counters = {sid: _counters(stats) for sid, stats in stages.items()}
    extras = sorted({name for found in counters.values() for name, value in found.items() if value})
    names = ("stage", "type", "device", *_STAGE_COLUMNS, *extras, "time", "load", "peak memory",
             "stored results by run")
    head = "".join(f"<th>{e(c)}</th>" for c in names)
    body = []
    for stage_id, stats in stages.items():
        cells = [e(stage_id), e(stats.get("type_name")), e(stats.get("device"))]
        cells += [e(_number(stats.get(c, 0))) for c in _STAGE_COLUMNS]
        cells += [e(_number(counters[stage_id].get(c, 0))) for c in extras]
        cells += [f"{float(stats.get('seconds') or 0):.2f}s", f"{float(stats.get('load_seconds') or 0):.2f}s",
                  e(_bytes((stats.get("peak_memory") or {}).get("bytes"))), _made_by(stats, manifest.get("run_id"))]
        body.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return (f'<section><h2>stages</h2><div class="scroll"><table class="stages"><tr>{head}</tr>{"".join(body)}'
            "</table></div></section>")


def _counters(stats: dict[str, Any]) -> dict[str, float]:
    """Every other number a stage reports (retries, tokens, cost...), also those a stage keeps in a
    mapping of its own (`counters`), whatever their names: the table grows a column for each."""
    found: dict[str, float] = {}
    for name, value in stats.items():
        if name in _NOT_COUNTERS:
            continue
        if isinstance(value, dict):
            found.update({str(k): v for k, v in value.items() if _is_number(v)})
        elif _is_number(value):
            found[name] = value
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _made_by(stats: dict[str, Any], this_run: Any) -> str:
    """Which runs made the stage's stored results (history.py): this run's marked 'this run'."""
    made_by = stats.get("made_by") or {}
    return ", ".join(f"{e(run)}{' (this run)' if run == this_run else ''}: {e(_number(count))}"
                     for run, count in made_by.items()) or "-"


def _gallery(scan: Scan, inputs: dict[int, dict[str, Any]], page: Page) -> str:
    shown = scan.shown
    filters = [("all", len(shown)), *((s, sum(1 for r in shown if r.get("status") == s)) for s in STATUS_ORDER),
               ("flagged", sum(1 for r in shown if r.get("flags")))]
    if page.connect or scan.reviews:
        filters += [(f"review-{s}", sum(1 for r in shown if (r.get("review") or "pending") == s))
                    for s in ("pending", "approved", "rejected")]
    buttons = "".join(f'<button data-show="{e(s)}">{e(_FILTER_LABELS.get(s, s))} <small>{n}</small></button>'
                      for s, n in filters if n or s == "all")
    rendered = [card(r, inputs.get(r.get("row", -1)), page.link, i, page.card_extra(r) if page.card_extra else "")
                for i, r in enumerate(shown)]
    # Cards past the first page wait in a <template>: parsed, but neither styled nor laid out nor
    # fetching media until the page's script shows them (10,000 cards open in a second, not in six).
    cards = "".join(rendered[:PAGE_SIZE])
    if len(rendered) > PAGE_SIZE:
        cards += f'<template id="more-cards">{"".join(rendered[PAGE_SIZE:])}</template>'

    return (f'<section id="rows"><h2>rows</h2><div class="toolbar"><p class="filters">{buttons}</p>'
            '<input id="search" type="search" placeholder="search texts, inputs, errors (/)" autocomplete="off">'
            f'<span id="pager"></span></div>{_left_out(scan)}'
            f'<div class="gallery" data-cards="{len(shown)}">{cards}</div><p id="pager-bottom"></p></section>'
            '<p id="images-loaded" data-loaded="" data-total=""></p>')


_FILTER_LABELS = {"review-pending": "to review", "review-approved": "✓ approved", "review-rejected": "✗ rejected"}


def _left_out(scan: Scan) -> str:
    if scan.complete:
        return ""
    left = ", ".join(f"{n} {s}" for s, n in scan.left_out.items())
    return (f'<p class="note" id="left-out">showing {len(scan.shown)} of {scan.total} rows: every row that needs a '
            f"look (up to {scan.limit}) and a sample of {scan.limit} done rows; left out: {e(left)}. "
            f"<code>aigc report OUT --rows N</code> (or <code>--rows all</code>) shows more; results.jsonl has "
            "every row.</p>")


def _groups_section(groups: list[dict[str, Any]], page: Page) -> str:
    cards = []
    for position, group in enumerate(groups[:MAX_GROUP_CARDS]):
        status = str(group.get("status", "?"))
        members = group.get("members") or []
        record = {**group, "row": f"group {group.get('group')}", "line": f"{len(members)} rows"}
        html = card(record, None, page.link, position)
        cards.append(html.replace('<article class="card ', '<article class="card group ', 1)
                     .replace(f'data-status="{e(status)}"', f'data-status="{e(status)}" data-group="1"', 1))
    return f'<section id="groups"><h2>groups ({len(groups)})</h2><div class="gallery">{"".join(cards)}</div></section>'


def _groups(out_dir: Path) -> list[dict[str, Any]]:
    groups = []
    for record in read_records(out_dir / GROUPS_FILE):
        groups.append(record)
        if len(groups) >= MAX_GROUP_CARDS:
            break
    return groups


def read_inputs(manifest: dict[str, Any], shown: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The input values of the rows shown, read from the input file the manifest names ({} if it is gone)."""
    from .errors import AigcError
    from .sources import stream_rows

    source = manifest.get("input") or {}
    path, columns = source.get("path"), source.get("columns")
    wanted = {line: row for r in shown  # line -> row index
              if isinstance(row := r.get("row"), int) and isinstance(line := r.get("line"), int)}
    if not wanted or not isinstance(path, str) or not isinstance(columns, dict) or not Path(path).is_file():
        return {}
    found: dict[int, dict[str, Any]] = {}
    try:
        rows = stream_rows(path, columns, max(wanted.values()) + 1, count=False)
        for row in rows.at_lines(wanted):  # only those lines are parsed (the others are not even split)
            found[row.index] = row.values or {}
    except (AigcError, OSError, ValueError):
        return {}
    return found


def _asset(name: str) -> str:
    return resources.files("aigc_pipeline").joinpath("assets", name).read_text(encoding="utf-8")


def _number(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value


def _bytes(count: Any) -> str:
    if not isinstance(count, (int, float)) or count <= 0:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return ""
