"""The gallery card of one row, shared by `report.html`, its mailable bundle and the review app.

A card puts what a person looks at first: large images and video posters (click for the
lightbox), players for audio and video, the texts the row produced, its inputs; the artifacts'
metadata and other values are folded away in a <details>. Every value from a row is user data:
it is HTML-escaped, and an artifact becomes a link only when its path is a plain relative path
under `artifacts/` (anything else is shown as text). Where an artifact's bytes come from is the
caller's choice (`Linker`): a relative path (report.html), a data: URI (the bundle), a URL of
the review app.
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
AUDIO_SUFFIXES = (".wav", ".mp3", ".ogg", ".flac", ".m4a")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".m4v")
EAGER_CARDS = 24  # the first cards load their media at once; later ones when scrolled to
PAGE_SIZE = 60  # cards per gallery page; the page's script pages through the rest
_SAFE_ARTIFACT = re.compile(r"^artifacts/[A-Za-z0-9_][A-Za-z0-9_./-]*$")

Linker = Callable[[str], str]  # a safe relative artifact path -> the URL the page uses for it


def safe_artifact_path(path: Any) -> str | None:
    """`path` when it is a plain relative path inside `artifacts/` (no '..'), else None."""
    if not isinstance(path, str) or not _SAFE_ARTIFACT.match(path) or ".." in PurePosixPath(path).parts:
        return None
    return path


def relative_link(path: str) -> str:
    return quote(path)


def data_uri_linker(out_dir: Path) -> Linker:
    """Artifacts embedded in the page as data: URIs (a page that works alone, e.g. when mailed)."""

    def link(path: str) -> str:
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        try:
            data = (out_dir / path).read_bytes()
        except OSError:
            return quote(path)  # gone: the page shows a broken link rather than failing to build
        return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"

    return link


def e(value: Any) -> str:
    """HTML-escaped text of any value (None as empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def row_id(record: dict[str, Any]) -> str:
    """The row's identity as the review decisions know it: its `id` when results carry one, else its row number."""
    ident = record.get("id")
    return str(ident) if ident not in (None, "") else str(record.get("row"))


def card(record: dict[str, Any], inputs: dict[str, Any] | None, link: Linker, position: int,
         extra: str = "") -> str:
    """One row's <article>. `position` in the gallery decides eager or lazy media and the first page."""
    status = str(record.get("status", "?"))
    flags = [f for f in record.get("flags") or [] if isinstance(f, dict)]
    found = record.get("outputs")
    outputs: dict[str, Any] = found if isinstance(found, dict) else {}
    lazy = position >= EAGER_CARDS
    media, texts, other, meta = split_outputs(outputs, link, lazy)
    review = record.get("review")
    badges = f'<span class="badge {e(status)}">{e(status)}</span>'
    if isinstance(review, str):
        badges += f'<span class="badge review-{e(review)}" data-review-badge="">{e(review)}</span>'
    body = [f'<div class="media">{"".join(media)}</div>' if media else "", "".join(texts),
            _values("inputs", inputs)]
    error = record.get("error")
    if isinstance(error, dict):
        body.append(f'<p class="error"><b>{e(error.get("stage"))}</b>: {e(error.get("reason"))}</p>')
    body += [f'<p class="flag">⚑ {e(f.get("stage"))}: {e(f.get("reason"))}</p>' for f in flags]
    folded = _values("outputs", other) + "".join(meta)
    if folded:
        body.append(f'<details class="meta"><summary>details</summary>{folded}</details>')
    return (f'<article class="card {e(status)}" data-status="{e(status)}" data-flagged="{1 if flags else 0}" '
            f'data-row="{e(row_id(record))}" data-review="{e(review or "")}" tabindex="-1">'
            f'<header><b>row {e(record.get("row"))}</b> <small>line {e(record.get("line"))}</small> {badges}'
            f'</header>{"".join(body)}{extra}</article>')


def split_outputs(outputs: dict[str, Any], link: Linker, lazy: bool) -> tuple[list[str], list[str], dict[str, Any],
                                                                                list[str]]:
    """(media players, readable texts, other values, folded artifact metadata) of a row's outputs."""
    media: list[str] = []
    texts: list[str] = []
    other: dict[str, Any] = {}
    meta: list[str] = []
    for name, value in outputs.items():
        if isinstance(value, dict) and isinstance(value.get("path"), str):
            media.append(artifact(name, value, link, lazy))
            meta.append(_artifact_meta(name, value))
        elif isinstance(value, str):
            texts.append(f'<div class="out"><label>{e(name)}</label><p class="text">{e(value)}</p></div>')
        else:
            other[name] = value
    return media, texts, other, meta


def artifact(name: str, value: dict[str, Any], link: Linker, lazy: bool = False) -> str:
    """An image (zoomable), a video or an audio player for one artifact output; a text for anything else."""
    path = safe_artifact_path(value.get("path"))
    label = f'<label>{e(name)}</label>'
    if path is None:
        return f'<figure>{label}<span class="text">{e(value.get("path"))}</span></figure>'
    src = e(link(path))
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        loading = ' loading="lazy"' if lazy else ""
        return f'<figure>{label}<img src="{src}"{loading} alt="{e(name)}" class="zoom"></figure>'
    preload = "none" if lazy else "metadata"
    if suffix in VIDEO_SUFFIXES:
        poster = safe_artifact_path(value.get("poster"))
        poster_attr = f' poster="{e(link(poster))}"' if poster else ""
        return (f'<figure class="wide">{label}<video controls playsinline preload="{preload}"{poster_attr} '
                f'src="{src}"></video></figure>')
    if suffix in AUDIO_SUFFIXES:
        return f'<figure class="wide">{label}<audio controls preload="{preload}" src="{src}"></audio></figure>'
    return f'<figure>{label}<a href="{src}" download>{e(PurePosixPath(path).name)}</a></figure>'


def _artifact_meta(name: str, value: dict[str, Any]) -> str:
    items = [(k, v) for k, v in value.items() if k != "path"]
    rows = "".join(f"<dt>{e(k)}</dt><dd>{_plain(v)}</dd>" for k, v in items)
    return f'<dl class="artifact"><dt>{e(name)}</dt><dd><code>{e(value.get("path"))}</code></dd>{rows}</dl>'


def _values(kind: str, values: Any) -> str:
    if not isinstance(values, dict) or not values:
        return ""
    items = "".join(f"<dt>{e(name)}</dt><dd>{_plain(value)}</dd>" for name, value in values.items())
    return f'<dl class="{kind}">{items}</dl>'


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return f'<span class="text">{e(value)}</span>'
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(f'<span class="chip">{e(v)}</span>' for v in value)
    return f"<code>{e(json.dumps(value, ensure_ascii=False, default=str))}</code>"
