"""HTML assembly: one static page, PNGs embedded as data URIs (the file can be moved or mailed alone)."""
from __future__ import annotations

import base64
import html
from pathlib import Path

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:1.6em;margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:.92em} td,th{border:1px solid #ddd;padding:4px 10px;text-align:left}
th{background:#f4f4f4} tr.sel td{background:#fff5d6;font-weight:600}
img{max-width:100%;border:1px solid #eee;margin:6px 0} .note{color:#666;font-size:.9em}
"""


def esc(v) -> str:
    return html.escape(str(v))


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.4e}"
    return str(v)


def table(rows: list[tuple[str, object]]) -> str:
    """A two-column key/value table."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def grid_table(columns: list[str], rows: list[list], selected: list[bool] | None = None) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = ""
    for i, r in enumerate(rows):
        cls = ' class="sel"' if selected and selected[i] else ""
        body += f"<tr{cls}>" + "".join(f"<td>{esc(fmt(v))}</td>" for v in r) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def image(png: Path, alt: str) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}" title="{esc(Path(png).name)}">'


def section(sid: str, title: str, body: str, note: str | None = None) -> str:
    n = f'<p class="note">{esc(note)}</p>' if note else ""
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{n}{body}</section>\n'


def page(title: str, subtitle: str, sections: list[str]) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p class=\"note\">{esc(subtitle)}</p>\n"
            + "".join(sections) + "</body></html>\n")


def write_page(out_dir: Path, text: str) -> Path:
    """Write index.html atomically (tmp + rename) and return its path."""
    import os

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".index.html.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out_dir / "index.html")
    return out_dir / "index.html"
