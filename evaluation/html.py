"""Tiny helpers for self-contained HTML pages (inline CSS, no scripts, no network, no assets).

Used by the leaderboard page and the Codabench ``detailed_results.html``. Every piece of text is
escaped; numbers are formatted here so every page shows them the same way.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:1.5rem;color:#222;max-width:1400px}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.85rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:#f3f3f3;position:sticky;top:0}
td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fafafa}
.best{font-weight:bold;background:#e6f4ea!important}
.bad{color:#a00}.note{color:#555;font-size:.85rem}
.scroll{overflow-x:auto}
code{background:#f3f3f3;padding:0 .2rem}
"""


def esc(value: object) -> str:
    """HTML-escape ``str(value)``."""
    return html.escape(str(value), quote=True)


def fmt(value: object, digits: int = 4) -> str:
    """A number with ``digits`` decimals; ``—`` for ``None``/NaN; other values as text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.{digits}f}"
    return str(value)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    left: int = 1,
    highlight: Sequence[Sequence[bool]] | None = None,
    digits: int = 4,
) -> str:
    """An HTML table; the first ``left`` columns are left-aligned; ``highlight[i][j]`` bolds a cell."""
    out = ['<div class="scroll"><table><thead><tr>']
    out += [f'<th class="{"l" if j < left else ""}">{esc(h)}</th>' for j, h in enumerate(headers)]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        out.append("<tr>")
        for j, cell in enumerate(row):
            classes = []
            if j < left:
                classes.append("l")
            if highlight is not None and highlight[i][j]:
                classes.append("best")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            out.append(f"<td{cls}>{esc(fmt(cell, digits))}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def paragraph(text: str, css_class: str | None = None) -> str:
    cls = f' class="{css_class}"' if css_class else ""
    return f"<p{cls}>{esc(text)}</p>"


def bullet_list(items: Iterable[object]) -> str:
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def page(title: str, body: Sequence[str]) -> str:
    """A complete HTML document: ``body`` parts are trusted HTML (build them with the helpers above)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )
