"""Assembling the self-contained HTML page: inline CSS, JS and the data as escaped JSON."""

from __future__ import annotations

import html
import json
from importlib.resources import files
from typing import Any

_ASSETS = "resources/report"


def _asset(name: str) -> str:
    return files("prefsmith").joinpath(f"{_ASSETS}/{name}").read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>``, ``&`` escaped.

    >>> embed_json({"a": "</script><b>&"})
    '{"a":"\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e\\\\u0026"}'
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_html(data: dict[str, Any]) -> str:
    """The whole page for :func:`prefsmith.report.data.report_data`'s output."""
    page = _asset("report.html")
    parts = {
        "__TITLE__": html.escape(str(data.get("title", "prefsmith report"))),
        "/*__CSS__*/": _asset("report.css"),
        "/*__JS__*/": _asset("report.js"),
        "__DATA__": embed_json(data),
    }
    for key, value in parts.items():
        head, sep, tail = page.partition(key)
        if not sep:
            raise RuntimeError(f"report template lacks {key}")
        page = head + value + tail
    return page
