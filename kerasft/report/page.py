"""HTML building blocks of the report pages: one stylesheet, escaped text, tables, figures.

The pages are plain HTML with inline CSS and images referenced beside them
(`plots/*.png`): they open offline, from a file or a file server, with no script
and no external URL.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       margin: 0; background: #f6f7f9; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-top: 8px; border-top: 1px solid #e3e6eb; }
h3 { font-size: 15px; margin: 18px 0 8px; }
.sub { color: #5b6475; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13px; }
th, td { border-bottom: 1px solid #e3e6eb; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.card { border: 1px solid #e3e6eb; border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.card b { display: block; font-size: 20px; }
.card span { color: #5b6475; font-size: 12px; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; border: 1px solid #eef0f3; }
figcaption { color: #5b6475; font-size: 12px; }
.gap { background: #fff4e5; border-left: 4px solid #f0a020; padding: 6px 12px; margin: 8px 0; }
.wrong { background: #fde2e1; }
.muted { color: #8a92a3; }
code { background: #f0f2f5; padding: 0 4px; border-radius: 3px; }
nav a { margin-right: 12px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers as people read them: floats to `digits` places, integers with separators."""
    if isinstance(value, bool) or value is None:
        return esc("" if value is None else value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return esc(value)


def table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None
) -> str:
    """A table; cells are escaped (pass `Raw` to keep markup) and numbers formatted."""
    numeric = numeric or [False] * len(header)
    head = "".join(
        f'<th class="num">{esc(h)}</th>' if n else f"<th>{esc(h)}</th>"
        for h, n in zip(header, numeric, strict=True)
    )
    body = []
    for row in rows:
        cells = []
        for value, n in zip(row, numeric, strict=True):
            text = value.html if isinstance(value, Raw) else fmt(value)
            cells.append(f'<td class="num">{text}</td>' if n else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Raw:
    """Markup a table cell keeps as is."""

    def __init__(self, markup: str):
        self.html = markup


def figure(src: str, caption: str, alt: str) -> str:
    return (
        f'<figure><img src="{esc(src)}" alt="{esc(alt)}" loading="lazy">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def cards(items: Iterable[tuple[str, Any]]) -> str:
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{fmt(v)}</b><span>{esc(k)}</span></div>' for k, v in items)
        + "</div>"
    )


def document(title: str, subtitle: str, sections: Iterable[str]) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body><main>"
        f'<h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p>'
        + "\n".join(s for s in sections if s)
        + "</main></body></html>\n"
    )
