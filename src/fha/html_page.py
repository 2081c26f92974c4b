"""The self-contained HTML page of a report (compare, analyze, study): one file with its style
and, as data URIs, its images, so that it can be mailed or archived alone."""

from __future__ import annotations

import html
from collections.abc import Sequence


def html_page(title: str, style: str, body: Sequence[str]) -> str:
    """A page titled `title` (its tab and its <h1>), styled by the CSS `style`; `body` is its HTML
    after the heading, one piece a line."""
    escaped = html.escape(title)
    lines = [
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{escaped}</title>',
        f"<style>{style}</style></head><body>",
        f"<h1>{escaped}</h1>",
        *body,
        "</body></html>",
    ]
    return "\n".join(lines) + "\n"
