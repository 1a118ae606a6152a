"""The report's charts, drawn with matplotlib (Agg backend, no display, no network) from the report
model. Each `chart_*` returns a Figure or None when there is nothing to draw; `render` turns one into
SVG text or PNG bytes. Fonts are the ones matplotlib ships (DejaVu Sans); SVG text is drawn as paths,
so the page needs no font at all."""
from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch

RC = {"svg.fonttype": "path", "svg.hashsalt": "hetagent-report", "font.family": "DejaVu Sans",
      "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "axes.spines.top": False,
      "axes.spines.right": False, "figure.dpi": 100}
PARTS = (("capex", "#4C72B0", "Capex (annuity)"), ("power", "#DD8452", "Power"),
         ("opex", "#8C8C8C", "Other opex / usage"))
CHOSEN = "#2CA02C"
FEASIBLE = "#4C72B0"
INFEASIBLE = "#C7C7C7"
SLA = "#D62728"
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C",
           "#CCB974", "#64B5CD", "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B"]

TITLES = {"cost": "Cost per hour by device", "graph": "Operator graph, coloured by device",
          "waterfall": "Critical path against the SLA", "alternatives": "Alternatives: TCO per hour",
          "pareto": "TCO against SLA (Pareto curve)", "sensitivity": "Sensitivity of the TCO",
          "simulation": "Simulated end-to-end latency", "measured": "Measured against predicted latency"}


def _money(v: float) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"${v:,.0f}"
    if abs(v) >= 1:
        return f"${v:,.2f}"
    return f"${v:.3g}"


def device_colors(model: dict) -> dict:
    devs = list(model["recommendation"]["fleet"])
    for r in model["placement"]["rows"]:
        devs.append(r["device"])
    for r in model["alternatives"]["rows"]:
        if r.get("device"):
            devs.append(r["device"])
    out = {}
    for d in dict.fromkeys(d for d in devs if d):
        out[d] = PALETTE[len(out) % len(PALETTE)]
    return out


def _fig(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h))
    return fig


def chart_cost(model: dict):
    rows = model["cost"]["rows"]
    if not rows:
        return None
    fig = _fig(7.5, 0.45 * len(rows) + 1.4)
    ax = fig.add_subplot()
    names = [f"{r['count']} x {r['device']}" for r in rows]
    left = [0.0] * len(rows)
    for key, color, label in PARTS:
        vals = [r[key] for r in rows]
        ax.barh(names, vals, left=left, color=color, label=label, height=0.6)
        left = [a + b for a, b in zip(left, vals)]
    for i, r in enumerate(rows):
        ax.text(left[i], i, "  " + _money(r["total"]) + "/h", va="center", fontsize=8)
    ax.set_xlabel("$ per hour")
    ax.set_xlim(0, max(left) * 1.25 if max(left) > 0 else 1)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_title(f"Cost per hour by device (total {_money(model['recommendation']['tco']['per_hour'])}/h)")
    fig.tight_layout()
    return fig


def _layers(nodes, edges):
    names = [n["name"] for n in nodes]
    preds = {n: [] for n in names}
    for a, b in edges:
        if a in preds and b in preds:
            preds[b].append(a)
    depth: dict = {}

    def d(n, seen=()):
        if n in depth:
            return depth[n]
        if n in seen:
            return 0
        depth[n] = 0 if not preds[n] else 1 + max(d(p, seen + (n,)) for p in preds[n])
        return depth[n]
    for n in names:
        d(n)
    return depth


def chart_graph(model: dict, colors: dict):
    """A layered drawing (layer = longest path from a source), top to bottom; long graphs wrap into
    side-by-side bands so that the drawing fits a page."""
    g = model["placement"].get("graph")
    if not g or not g["nodes"]:
        return None
    nodes, edges = g["nodes"], g["edges"]
    depth = _layers(nodes, edges)
    by_layer: dict = {}
    for n in nodes:
        by_layer.setdefault(depth[n["name"]], []).append(n)
    n_layers = max(by_layer) + 1
    width = max(len(v) for v in by_layer.values())
    box_w, gap_x, row_h, band_gap = 3.0, 0.3, 1.0, 0.8
    per_band = n_layers
    band_w = width * box_w + (width - 1) * gap_x
    max_bands = max(1, int(7.5 * 1.35 // (band_w * 0.5 + band_gap * 0.5)))
    if n_layers > 14 and max_bands > 1:
        bands = min(max_bands, math.ceil(n_layers / 9))
        per_band = math.ceil(n_layers / bands)
    bands = math.ceil(n_layers / per_band)
    pos = {}
    for layer, ns in by_layer.items():
        band, row = divmod(layer, per_band)
        total = len(ns) * box_w + (len(ns) - 1) * gap_x
        x0 = band * (band_w + band_gap) + band_w / 2
        for i, n in enumerate(ns):
            pos[n["name"]] = (x0 - total / 2 + i * (box_w + gap_x) + box_w / 2, -row * row_h)
    span_x = bands * band_w + (bands - 1) * band_gap
    fig_w = min(7.5, max(3.5, span_x * 0.5 + 0.4))
    scale = fig_w / (span_x + 0.4)
    fig_h = min(24.0, max(2.0, per_band * row_h * scale * 1.0 + 0.9))
    fig = _fig(fig_w, fig_h)
    ax = fig.add_subplot()
    ax.set_axis_off()
    half = 0.22
    for a, b in edges:
        if a in pos and b in pos:
            (x1, y1), (x2, y2) = pos[a], pos[b]
            if abs(x1 - x2) > band_w:        # wraps to the next band: leave from the bottom, enter at the top
                ax.annotate("", xy=(x2, y2 + half), xytext=(x1, y1 - half),
                            arrowprops={"arrowstyle": "-|>", "color": "#999999", "lw": 0.7, "ls": "--",
                                        "connectionstyle": "arc3,rad=0.15", "shrinkA": 0, "shrinkB": 0})
            else:
                ax.annotate("", xy=(x2, y2 + half), xytext=(x1, y1 - half),
                            arrowprops={"arrowstyle": "-|>", "color": "#555555", "lw": 0.8,
                                        "shrinkA": 0, "shrinkB": 0})
    fs = 6.5 if box_w * scale > 1.3 else 5.5
    max_chars = int(box_w * scale * 72 / (fs * 0.62))
    for n in nodes:
        x, y = pos[n["name"]]
        c = colors.get(n["device"], "#FFFFFF")
        ax.add_patch(FancyBboxPatch((x - box_w / 2, y - half), box_w, 2 * half,
                                    boxstyle="round,pad=0.02,rounding_size=0.08", fc=c, ec="#333333",
                                    lw=0.6, alpha=0.9 if n["device"] else 0.3))
        label = n["name"] if len(n["name"]) <= max_chars else "..." + n["name"][-(max_chars - 3):]
        ax.text(x, y, label, ha="center", va="center", fontsize=fs,
                color="white" if n["device"] else "#333333")
    ax.set_xlim(-0.2, span_x + 0.2)
    ax.set_ylim(-(per_band - 1) * row_h - 0.5, 0.5)
    used = [d for d in colors if any(n["device"] == d for n in nodes)]
    ax.legend(handles=[Patch(color=colors[d], label=d) for d in used], loc="lower center",
              bbox_to_anchor=(0.5, 1.0), ncol=min(4, len(used)), fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.45 / fig_h)
    return fig


def chart_waterfall(model: dict, colors: dict):
    cp = model["critical_path"]
    steps = cp["steps"]
    if not steps:
        return None
    fig = _fig(7.5, 0.26 * (len(steps) + 1) + 1.3)
    ax = fig.add_subplot()
    labels = [s["name"] if len(s["name"]) <= 40 else "..." + s["name"][-37:] for s in steps] + ["end to end"]
    for i, s in enumerate(steps):
        c = "#BBBBBB" if s["kind"] == "transfer" else colors.get(s["device"], "#4C72B0")
        ax.barh(i, s["ms"], left=s["start_ms"], color=c, height=0.7)
        ax.text(s["start_ms"] + s["ms"], i, f" {s['ms']:.1f} ms", va="center", fontsize=6.5)
    e2e = cp.get("end_to_end_ms") or sum(s["ms"] for s in steps)
    ax.barh(len(steps), e2e, color="#333333", height=0.7)
    ax.text(e2e, len(steps), f" {e2e:.1f} ms", va="center", fontsize=7, fontweight="bold")
    sla = cp.get("sla_ms")
    right = max(e2e, sla or 0) * 1.18
    if sla:
        ax.axvline(sla, color=SLA, lw=1.2, ls="--")
        ax.text(sla, -0.9, f"SLA {sla:g} ms", color=SLA, ha="right", va="bottom", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=6.5)
    ax.set_ylim(len(labels) - 0.4, -1.2)
    ax.set_xlim(0, right)
    ax.set_xlabel("milliseconds from request arrival")
    ax.set_title("Critical path (latency waterfall)")
    fig.tight_layout()
    return fig


def chart_alternatives(model: dict):
    rows = [r for r in model["alternatives"]["rows"] if r.get("per_hour") is not None]
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: r["per_hour"])
    fig = _fig(7.5, 0.28 * len(rows) + 1.4)
    ax = fig.add_subplot()
    cols = [CHOSEN if r["chosen"] else FEASIBLE if r["feasible"] else INFEASIBLE for r in rows]
    vals = [r["per_hour"] for r in rows]
    ax.barh([r["name"] for r in rows], vals, color=cols, height=0.65,
            hatch=None)
    positive = [v for v in vals if v > 0]
    log = bool(positive) and max(positive) / min(positive) > 30
    if log:
        ax.set_xscale("log")
    for i, r in enumerate(rows):
        lat = f", {r['end_to_end_ms']:,.0f} ms" if r.get("end_to_end_ms") is not None else ""
        tag = "" if r["feasible"] else " (misses SLA)"
        ax.text(max(0, r["per_hour"]), i, f"  {_money(r['per_hour'])}/h{lat}{tag}",
                va="center", fontsize=7)
    ax.invert_yaxis()
    lo = min(positive) if positive else 1
    ax.set_xlim(lo / 2 if log else 0, max(vals) * (8 if log else 1.6) if max(vals) > 0 else 1)
    ax.set_xlabel("$ per hour" + (" (log scale)" if log else ""))
    ax.legend(handles=[Patch(color=CHOSEN, label="recommended"), Patch(color=FEASIBLE, label="meets the SLA"),
                       Patch(color=INFEASIBLE, label="misses the SLA")], loc="lower right", fontsize=7,
              frameon=False)
    ax.set_title("Recommended plan and every homogeneous fleet")
    fig.tight_layout()
    return fig


def chart_pareto(model: dict):
    pts = [p for p in model["pareto"]["points"] if p.get("feasible") and p.get("per_hour") is not None]
    if not pts:
        return None
    fig = _fig(7.5, 3.6)
    ax = fig.add_subplot()
    xs = [p["sla_ms"] for p in pts]
    ys = [p["per_hour"] for p in pts]
    xs_line, ys_line = xs + [xs[-1] * 1.15], ys + [ys[-1]]
    ax.step(xs_line, ys_line, where="post", color=FEASIBLE, lw=1.4, label="cheapest plan meeting the SLA")
    ax.plot(xs, ys, "o", color=FEASIBLE, ms=4)
    ch = model["pareto"]["chosen"]
    if ch.get("sla_ms") and ch.get("per_hour") is not None:
        ax.plot([ch["sla_ms"]], [ch["per_hour"]], marker="*", color=CHOSEN, ms=16, ls="none",
                label=f"recommended: SLA {ch['sla_ms']:g} ms, {_money(ch['per_hour'])}/h", zorder=5)
        ax.axvline(ch["sla_ms"], color=SLA, lw=0.8, ls="--")
    positive = [y for y in ys if y > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
        ax.set_ylabel("$ per hour (log scale)")
    else:
        ax.set_ylabel("$ per hour")
        ax.set_ylim(bottom=0)
    if max(xs) / max(min(xs), 1e-9) > 20:
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end SLA, ms (log scale)")
    else:
        ax.set_xlabel("end-to-end SLA, ms")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("TCO against the SLA")
    fig.tight_layout()
    return fig


def chart_sensitivity(model: dict):
    params = model["sensitivity"]["params"]
    if not params:
        return None
    n = len(params)
    fig = _fig(7.5, 2.9)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (key, p) in zip(axes, params.items()):
        pts = p["points"]
        xs = [q["value"] for q in pts]
        re = [q["per_hour"] for q in pts]
        fixed = [q.get("fixed_plan_per_hour") for q in pts]
        homo = [q.get("best_homogeneous_per_hour") for q in pts]
        if any(v is not None for v in homo):
            ax.plot(xs, [v if v is not None else math.nan for v in homo], color="#999999", lw=1, ls=":",
                    label="best homogeneous")
        if any(v is not None for v in fixed):
            ax.plot(xs, [v if v is not None else math.nan for v in fixed], color=FEASIBLE, lw=1, ls="--",
                    label="recommended fleet, held")
        ax.plot(xs, [v if v is not None else math.nan for v in re], color=CHOSEN, lw=1.6, marker="o", ms=3,
                label="cheapest plan at that value")
        ax.axvline(p["base"], color="#333333", lw=0.7)
        for f in p.get("flips") or []:
            a, b = f["between"]
            ax.axvspan(a, b, color=SLA, alpha=0.12)
        ax.set_xlabel(p["label"], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].set_ylabel("$ per hour")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def chart_simulation(model: dict):
    sim = model.get("simulation")
    if not sim:
        return None
    fig = _fig(7.5, 3.0)
    ax = fig.add_subplot()
    h = sim.get("histogram")
    if h:
        edges, counts = h["edges"], h["counts"]
        if len(edges) == len(counts) + 1:
            lefts = edges[:-1]
            widths = [b - a for a, b in zip(edges, edges[1:])]
        else:
            w = (edges[1] - edges[0]) if len(edges) > 1 else 1.0
            lefts, widths = edges, [w] * len(edges)
        ax.bar(lefts, counts, width=widths, align="edge", color=FEASIBLE, alpha=0.8, label="requests")
        ax.set_ylabel("requests")
    lat = sim.get("latency_ms") or {}
    for k, c in (("p50", "#555555"), ("p95", "#DD8452"), ("p99", "#8172B3")):
        if lat.get(k) is not None:
            ax.axvline(lat[k], color=c, lw=1, ls="-.", label=f"{k} {lat[k]:,.0f} ms")
    sla = model["recommendation"]["sla"].get("sla_ms")
    if sla:
        ax.axvline(sla, color=SLA, lw=1.2, ls="--", label=f"SLA {sla:g} ms")
    if not h and not lat:
        return None
    ax.set_xlabel("end-to-end latency, ms")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("Simulated end-to-end latency")
    fig.tight_layout()
    return fig


def chart_measured(model: dict):
    m = model.get("measured")
    if not m or not m.get("per_stage"):
        return None
    pred = {r["operator"]: r["latency_ms"] for r in model["placement"]["rows"]}
    names = [n for n in pred if n in m["per_stage"]] or list(m["per_stage"])
    names = names[:40]
    if not names:
        return None
    meas = [(m["per_stage"][n]["latency_ms"] or {}).get("p50", math.nan) if n in m["per_stage"] else math.nan
            for n in names]
    prd = [pred.get(n, math.nan) for n in names]
    fig = _fig(7.5, 0.24 * len(names) + 1.3)
    ax = fig.add_subplot()
    ys = range(len(names))
    ax.barh([y - 0.2 for y in ys], prd, height=0.4, color=FEASIBLE, label="predicted")
    em = set(m.get("emulated") or [])
    ax.barh([y + 0.2 for y in ys], meas, height=0.4,
            color=["#DD8452" if n not in em else "#CCB974" for n in names], label="measured (p50)")
    ax.set_yticks(list(ys), [n if len(n) <= 40 else "..." + n[-37:] for n in names], fontsize=6.5)
    ax.invert_yaxis()
    ax.set_xlabel("ms")
    hs = [Patch(color=FEASIBLE, label="predicted"), Patch(color="#DD8452", label="measured (p50)")]
    if em:
        hs.append(Patch(color="#CCB974", label="emulated (p50)"))
    ax.legend(handles=hs, fontsize=7, frameon=False, loc="lower right")
    ax.set_title("Per-stage latency: measured against predicted")
    fig.tight_layout()
    return fig


def charts(model: dict) -> dict:
    """{key: Figure} for every chart that has data, in report order."""
    with plt.rc_context(RC):
        colors = device_colors(model)
        out = {"cost": chart_cost(model), "graph": chart_graph(model, colors),
               "waterfall": chart_waterfall(model, colors), "alternatives": chart_alternatives(model),
               "pareto": chart_pareto(model), "sensitivity": chart_sensitivity(model),
               "simulation": chart_simulation(model), "measured": chart_measured(model)}
    return {k: v for k, v in out.items() if v is not None}


def render(fig: Figure, fmt: str) -> str | bytes:
    """SVG text (XML prolog and DOCTYPE removed, no metadata) or PNG bytes."""
    buf = io.BytesIO()
    with plt.rc_context(RC):
        if fmt == "svg":
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None,
                                                     "Type": None})
            text = buf.getvalue().decode("utf-8")
            start = text.find("<svg")
            return text[start:]
        fig.savefig(buf, format="png", dpi=150, metadata={"Software": None})
    return buf.getvalue()


def size_inches(fig: Figure) -> tuple[float, float]:
    w, h = fig.get_size_inches()
    return float(w), float(h)
