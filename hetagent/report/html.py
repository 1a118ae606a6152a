"""One self-contained HTML file: inline CSS (with a print stylesheet for A4 and Letter), charts as SVG
data URIs (vector, one document each so their ids never collide), no script, no font, no URL that
the browser could fetch. Source URLs in the device table are plain text, never links."""
from __future__ import annotations

import base64
import html as _html

from hetagent.report import charts as _charts
from hetagent.report.content import sections

CSS = """
:root { --ink: #1d1d1f; --muted: #5f6368; --line: #d9dce1; --accent: #2ca02c; --warn: #b3261e; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; color: var(--ink); background: #fff; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
       Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 28px 48px; }
header { border-bottom: 2px solid var(--ink); margin-bottom: 12px; }
header h1 { font-size: 24px; margin: 0 0 4px; }
header p { margin: 0 0 10px; color: var(--muted); font-size: 12px; }
h2 { font-size: 19px; margin: 28px 0 8px; padding-top: 6px; border-top: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
h4 { font-size: 13px; margin: 14px 0 4px; }
p { margin: 6px 0 10px; }
p.lead { font-size: 18px; font-weight: 600; margin: 8px 0 12px; }
nav ol { columns: 2; margin: 6px 0 0; padding-left: 20px; font-size: 13px; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(175px, 1fr)); gap: 10px; margin: 10px 0; }
.kpi { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; break-inside: avoid;
       page-break-inside: avoid; }
.kpi .label { font-size: 11px; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); }
.kpi .value { font-size: 21px; font-weight: 700; margin: 2px 0; }
.kpi .detail { font-size: 11.5px; color: var(--muted); }
figure { margin: 12px 0 16px; break-inside: avoid; page-break-inside: avoid; text-align: center; }
figure img.chart { display: block; margin: 0 auto; max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 4px; }
.table-wrap { overflow-x: auto; margin: 6px 0 14px; }
table { border-collapse: collapse; width: 100%; font-size: 12px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 6px; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
th { background: #f3f4f6; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.chosen td { background: #eaf6ea; font-weight: 600; }
.note { border-left: 3px solid #e0a800; background: #fff8e1; padding: 6px 10px; margin: 8px 0; font-size: 12.5px; }
.tag { display: inline-block; border-radius: 3px; padding: 1px 7px; font-size: 11px; font-weight: 700;
       text-transform: uppercase; color: #fff; background: #5f6368; }
.tag.simulated { background: #8172b3; } .tag.measured { background: #2ca02c; } .tag.emulated { background: #c77c00; }
ul { margin: 6px 0 10px; padding-left: 22px; }
footer { margin-top: 32px; color: var(--muted); font-size: 11px; border-top: 1px solid var(--line); padding-top: 6px; }
@page { size: auto; margin: 12mm; }
@media print {
  body { font-size: 9.5pt; }
  main { max-width: none; padding: 0; }
  nav { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  h3, h4 { break-after: avoid; page-break-after: avoid; }
  section { break-inside: auto; }
  section.page { break-before: page; page-break-before: always; }
  figure { break-inside: avoid; page-break-inside: avoid; }
  figure img.chart { max-width: 100% !important; max-height: 235mm; width: auto !important; height: auto !important; }
  .table-wrap { overflow: visible; }
  table { font-size: 8pt; }
  thead { display: table-header-group; }
  tr, .kpi, .note { break-inside: avoid; page-break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""

_NUMERIC_HEADS = ("count", "TP", "PP", "batch", "replicas", "latency ms", "start ms", "duration ms", "finish ms",
                  "runs/request", "SLA ms")


def esc(s) -> str:
    return _html.escape(str(s), quote=True)


def _breakable(cell: str) -> str:
    """Escaped text that may wrap after dots, underscores and slashes (operator names, paths, URLs)."""
    out = esc(cell)
    for ch in (".", "_", "/"):
        out = out.replace(ch, ch + "<wbr>")
    return out


def _looks_numeric(cell: str) -> bool:
    c = cell.replace(",", "").replace("$", "").replace("%", "").replace(" ms", "").replace(" s", "").strip()
    c = c.lstrip("+-")
    try:
        float(c)
        return True
    except ValueError:
        return False


def _table(columns, rows) -> str:
    out = ['<div class="table-wrap"><table><thead><tr>']
    out += [f"<th>{esc(c)}</th>" for c in columns]
    out.append("</tr></thead><tbody>")
    for r in rows:
        chosen = bool(r) and str(r[0]).startswith("* ")
        out.append('<tr class="chosen">' if chosen else "<tr>")
        for i, cell in enumerate(r):
            cell = str(cell)
            if i == 0 and chosen:
                cell = cell[2:]
            if i > 0 and _looks_numeric(cell):
                out.append(f'<td class="num">{esc(cell)}</td>')
            else:
                out.append(f"<td>{_breakable(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _chart(key, caption, rendered: dict) -> str:
    if key not in rendered:
        return ""
    svg, (w, h) = rendered[key]
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    title = _charts.TITLES.get(key, key)
    return (f'<figure id="chart-{esc(key)}"><img class="chart" src="data:image/svg+xml;base64,{data}" '
            f'width="{round(w * 100)}" height="{round(h * 100)}" alt="{esc(title)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def _block(b, rendered) -> str:
    kind = b[0]
    if kind == "p":
        return f"<p>{esc(b[1])}</p>"
    if kind == "lead":
        return f'<p class="lead">{esc(b[1])}</p>'
    if kind == "note":
        return f'<div class="note">{esc(b[1])}</div>'
    if kind == "h3":
        return f"<h3>{esc(b[1])}</h3>"
    if kind == "h4":
        return f"<h4>{esc(b[1])}</h4>"
    if kind == "list":
        return "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in b[1]) + "</ul>"
    if kind == "tag":
        return f'<p><span class="tag {esc(b[1])}">{esc(b[1])}</span> {esc(b[2])}</p>'
    if kind == "kpis":
        return '<div class="kpis">' + "".join(
            f'<div class="kpi"><div class="label">{esc(a)}</div><div class="value">{esc(v)}</div>'
            f'<div class="detail">{esc(d)}</div></div>' for a, v, d in b[1]) + "</div>"
    if kind == "table":
        return _table(b[1], b[2])
    if kind == "chart":
        return _chart(b[1], b[2], rendered)
    raise ValueError(f"unknown block {kind}")


def render(model: dict) -> str:
    """The report as one HTML document (str)."""
    figs = _charts.charts(model)
    rendered = {k: (_charts.render(f, "svg"), _charts.size_inches(f)) for k, f in figs.items()}
    secs = sections(model)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<link rel="icon" href="data:,">',
           f"<title>{esc(model['title'])}</title><style>{CSS}</style></head><body><main>",
           f"<header><h1>{esc(model['title'])}</h1><p>generated by hetagent from "
           f"{esc(model.get('plan_file') or 'a plan')} on {esc(model['generated'])}</p></header>",
           '<nav><ol>' + "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>' for s in secs)
           + "</ol></nav>"]
    for i, s in enumerate(secs):
        cls = ' class="page"' if s.id == "assumptions" else ""
        out.append(f'<section id="{esc(s.id)}"{cls}><h2>{esc(s.title)}</h2>')
        out += [_block(b, rendered) for b in s.blocks]
        out.append("</section>")
    out.append("<footer>hetagent TCO report. Figures are the cost model's predictions unless marked "
               "measured, simulated or emulated; see Assumptions and sources.</footer>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"
