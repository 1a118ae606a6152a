"""The paper's experiment (Asgar et al. 2025, arXiv 2507.19635), reproduced with hetagent's cost model and
placement MILP: prefill::decode pairs over A40, A100, H100, B200, MI300X and Gaudi 3.

    python benchmarks/paper_reproduction.py            # writes benchmarks/results/paper_reproduction.json,
                                                       # docs/paper_reproduction.md and docs/paper_reproduction.png
    python benchmarks/paper_reproduction.py --json     # also prints one JSON line (the summary)

Setting (REFERENCE.md): one LLM call, Llama 3 8B or 70B, FP16 or FP8, 512 in / 4096 out (decode-heavy) or
4096 in / 512 out (prefill-heavy); prefill on device X, decode on device Y (X::Y); TP, PP, batch and
precision searched by the cost model's option grid (TP 1-8 within a node, PP 1/2/4, batch 1-256); the MILP
picks, per pair, the cheapest options and integer device counts at the offered rate:
  interactive: TTFT <= 250 ms on the prefill, time between tokens <= 20 ms on the decode, so the cheapest
               option is the largest batch (most tokens per device-second) that still meets the SLA;
  offline:     no latency bound: the lowest $ per token (objective "offline").
FP8 runs use FP8 on every device that has an FP8 rate and FP16 on the others (A40, A100).
TCO per million tokens (prompt + output) at a rate high enough that integer rounding is negligible;
benefit = TCO(H100::H100) / TCO(X::Y) (> 1: cheaper than H100::H100), on the paper's catalog and economics
(configs/devices/paper-2025, configs/tco/paper-2025.yaml) and on ours (default catalog and TCO).
The KV cache moves from X to Y over the scale-out link (roofline.transfer_time_s); its time is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hetagent.costmodel import roofline as rl  # noqa: E402
from hetagent.costmodel.devices import load_catalog  # noqa: E402
from hetagent.costmodel.operators import _model, cost_table, device_precisions  # noqa: E402
from hetagent.costmodel.tco import device_hour_cost, load_tco  # noqa: E402
from hetagent.ir.opgraph import Operator, OpGraph  # noqa: E402
from hetagent.placement import build_problem, milp  # noqa: E402
from hetagent.placement.solve import solve_problem  # noqa: E402

DEVICES = ("a40", "a100", "h100", "b200", "mi300x", "gaudi3")
NAMES = {"a40": "A40", "a100": "A100", "h100": "H100", "b200": "B200", "mi300x": "MI300X", "gaudi3": "Gaudi3"}
CATALOGS = (("paper", "paper-2025", "paper-2025"), ("ours", "default", "default"))
MODELS = ("llama-3-8b", "llama-3-70b")
PRECISIONS = ("fp16", "fp8")
MIXES = ((512, 4096), (4096, 512))
SLAS = ("interactive", "offline")
TTFT_MS, TBT_MS = 250.0, 20.0
RATE = 100.0            # requests/s: large enough that integer device counts round away
KEY_PAIRS = (("h100", "h100"), ("b200", "b200"), ("b200", "gaudi3"), ("h100", "gaudi3"),
             ("mi300x", "mi300x"), ("gaudi3", "gaudi3"))


def pair(x, y):
    return f"{NAMES[x]}::{NAMES[y]}"


def graph(model, pin, pout, sla):
    card = _model(model)
    stage_p = {"ttft_ms": TTFT_MS} if sla == "interactive" else {}
    stage_d = {"tbt_ms": TBT_MS} if sla == "interactive" else {}
    ops = [Operator("prefill", "llm.prefill", {"model": model, "prompt_tokens": pin}, 1.0, True, stage_p),
           Operator("kv", "llm.kv_transfer", {"model": model, "tokens": pin,
                                              "kv_bytes": pin * card.kv_bytes_per_token("fp16")}, 1.0, True),
           Operator("decode", "llm.decode", {"model": model, "prompt_tokens": pin, "output_tokens": pout},
                    1.0, True, stage_d)]
    return OpGraph(f"{model}-{pin}-{pout}", ops, [("prefill", "kv"), ("kv", "decode")], None, 50.0, RATE)


def table(g, cat, prec, model):
    """Cost table; FP8 runs keep FP8 where the device has it, FP16 elsewhere."""
    tab = cost_table(g, cat, DEVICES, precisions=("fp8", "fp16") if prec == "fp8" else ("fp16",))
    card = _model(model)
    if prec == "fp8":
        has8 = {d for d in DEVICES if "fp8" in device_precisions(cat[d], card)}
        for name, row in tab.items():
            tab[name] = {o: c for o, c in row.items()
                         if o.precision == ("fp8" if o.device in has8 else "fp16") or isinstance(c, str)}
    return tab


def run_setting(cat_name, cat, tco, model, prec, pin, pout, sla, time_limit=10.0):
    g = graph(model, pin, pout, sla)
    tab = table(g, cat, prec, model)
    hc = {d: dict(device_hour_cost(cat[d], tco, "buy")) for d in DEVICES}
    pb = build_problem(g, tab, {"mode": "buy", "devices": {d: {} for d in DEVICES}}, tco, cat,
                       objective="offline" if sla == "offline" else "tco", hour_costs=hc,
                       cross_vendor_kv=True)      # the paper's pairs cross vendors (B200::Gaudi3)
    toks = RATE * 3600 * (pin + pout)
    rows = []
    for x in DEVICES:
        for y in DEVICES:
            # the paper's X::Y is a prefill pool on X and a decode pool on Y (disaggregated, also when X == Y)
            prep = milp.prepare(pb, {(0, "prefill"): {x}, (0, "decode"): {y}})
            prep.options = {g: [o for o in opts if o.engine != "colocated"] for g, opts in prep.options.items()}
            out = solve_problem(pb, None, time_limit, 1e-6, prep=prep)
            r = {"pair": pair(x, y), "prefill": x, "decode": y, "status": out.info.status}
            if out.evaluation is not None:
                ev = out.evaluation
                r["per_million_tokens"] = ev.per_hour / toks * 1e6
                r["fleet"] = {d: n for d, n in sorted(ev.counts.items()) if n}
                for op in ("prefill", "decode"):
                    o = ev.placed[(0, op)]
                    cid = out.prep.member_of[0][op][1]
                    o_ = o.option
                    r[op + "_option"] = {"tp": o_.tp, "pp": o_.pp, "batch": o.load.batch, "replicas": o.load.replicas,
                                         "precision": o_.precision,
                                         "ttft_ms" if op == "prefill" else "tbt_ms":
                                             round(o.load.latency_ms[cid] if op == "prefill" else o.load.tbt_ms, 2)}
                r["kv_transfer_ms"] = round(ev.op_ms.get((0, "kv"), 0.0), 3)
            else:
                r["why"] = _why(out, pb)
            rows.append(r)
    base = next(r for r in rows if r["pair"] == "H100::H100").get("per_million_tokens")
    for r in rows:
        r["benefit"] = base / r["per_million_tokens"] if base and r.get("per_million_tokens") else None
    return {"catalog": cat_name, "model": model, "precision": prec, "input": pin, "output": pout, "sla": sla,
            "pairs": rows}


def _why(out, pb):
    if out.prep is None:
        return out.info.status
    for gid, phase in out.prep.uncovered():
        why = [w for _, w in out.prep.dropped.get(gid, []) if w != "excluded"]
        return f"{phase}: " + (why[0] if why else "no option")
    return out.info.status


# ------------------------------------------------------------------------------------------ side checks
def link_check(cat):
    """The paper: 200-400 Gbps links suffice for KV transfer up to 32K input tokens. For each input length,
    the prefill's latency at its fastest option (FP16, batch 1, on H100) is the time the KV has to leave the
    prefill devices (peak egress = KV / (TTFT x prefill devices)); we compare the per-device egress needed with
    200 and 400 Gbps, and give the transfer time of the whole KV over one 400 Gbps link (layer-wise
    streaming hides it behind the prefill when it is shorter)."""
    rows = []
    for model in MODELS:
        card = _model(model)
        per_tok = card.kv_bytes_per_token("fp16")
        for tokens in (4096, 8192, 16384, 32768):
            best = None
            for tp in (1, 2, 4, 8):
                for pp in (1, 2, 4):
                    try:
                        mem = rl.memory_gb(card, cat["h100"], "fp16", tp, pp, 1, tokens, tokens)
                        rl.check_fits(card, cat["h100"], "x", mem)
                    except Exception:
                        continue
                    t = rl.prefill(card, cat["h100"], "fp16", tp, pp, 1, tokens).total_s
                    if best is None or t < best[0]:
                        best = (t, tp * pp)
            if best is None:
                continue
            t, n = best
            kv = per_tok * tokens
            need_gbps = kv / (t * n) * 8 / 1e9
            rows.append({"model": model, "input_tokens": tokens, "kv_gb": kv / 1e9, "prefill_ms": t * 1e3,
                         "prefill_devices": n, "egress_gbps_per_device": need_gbps,
                         "transfer_ms_one_400g_link": kv * 8 / 400e9 * 1e3,
                         "transfer_ms_400g_per_device": kv * 8 / (400e9 * n) * 1e3,
                         "ok_200": need_gbps <= 200, "ok_400": need_gbps <= 400})
    return rows


def tp_check(cat):
    """Latency versus TP degree (H100, FP16, batch 1): prefill 4096 tokens and one decode step at 4096 context,
    with the all-reduce share. Memory is not checked here (70B at TP1 would not fit: latency only)."""
    rows = []
    for model in MODELS:
        card = _model(model)
        for tp in (1, 2, 4, 8):
            p = rl.prefill(card, cat["h100"], "fp16", tp, 1, 1, 4096)
            d = rl.decode_step(card, cat["h100"], "fp16", tp, 1, 1, 4096)
            rows.append({"model": model, "tp": tp, "prefill_ms": p.total_s * 1e3,
                         "prefill_allreduce_ms": p.parts_ms().get("allreduce", 0.0),
                         "decode_step_ms": d.total_s * 1e3,
                         "decode_allreduce_ms": d.parts_ms().get("allreduce", 0.0)})
    return rows


# ------------------------------------------------------------------------------------------------ verdicts
def verdicts(settings):
    out = []
    for s in settings:
        ok = [r for r in s["pairs"] if r.get("benefit")]
        if not ok:
            continue
        best = max(ok, key=lambda r: r["benefit"])
        by = {r["pair"]: r.get("benefit") for r in s["pairs"]}
        b2g, b2b, h2g = by.get("B200::Gaudi3"), by.get("B200::B200"), by.get("H100::Gaudi3")
        out.append({"catalog": s["catalog"], "model": s["model"], "precision": s["precision"],
                    "mix": f"{s['input']}/{s['output']}", "sla": s["sla"], "best": best["pair"],
                    "best_benefit": best["benefit"], "b200_gaudi3": b2g, "b200_b200": b2b, "h100_gaudi3": h2g,
                    "b200_gaudi3_is_best": best["pair"] == "B200::Gaudi3" or (b2g is not None and
                                                                              b2g >= best["benefit"] - 1e-9),
                    "b200_gaudi3_beats_b200": b2g is not None and b2b is not None and b2g > b2b + 1e-9,
                    "h100_gaudi3_comparable": h2g is not None and b2b is not None and h2g >= 0.9 * b2b})
    return out


def fmt(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def write_markdown(res, path):
    v = res["verdicts"]
    L = ["# The paper's experiment, reproduced", "",
         "Generated by `python benchmarks/paper_reproduction.py` (data: `benchmarks/results/paper_reproduction.json`,",
         "chart: `docs/paper_reproduction.png`). Do not edit by hand; edit the script and run it again.", "",
         "Setting (Asgar et al. 2025, arXiv 2507.19635, REFERENCE.md): one LLM call, Llama 3 8B / 70B, FP16 / FP8,",
         "512 in / 4096 out (decode-heavy) and 4096 in / 512 out (prefill-heavy); prefill on X, decode on Y",
         "(X::Y) over A40, A100, H100, B200, MI300X, Gaudi 3. For every pair hetagent's MILP",
         "(`placement.solve_problem` with the prefill restricted to X and the decode to Y) searches TP (1-8 in a",
         "node), PP (1, 2, 4), batch (1-256) and picks integer device counts at 100 requests/s:",
         f"interactive = TTFT <= {TTFT_MS:g} ms and time between tokens <= {TBT_MS:g} ms (so the largest batch that",
         "meets both); offline = no latency bound, lowest $ per token. FP8 runs use FP8 where the device has an",
         "FP8 rate and FP16 on A40 and A100 (no FP8 units). Benefit = TCO per million tokens of H100::H100 divided",
         "by that of X::Y (above 1: cheaper). Two catalogs: the paper's (its June 2025 prices and printed",
         "peaks, `configs/devices/paper-2025`, economics `configs/tco/paper-2025.yaml`: 4 years, 8%, TDP at",
         "$0.40/kWh) and ours (datasheet dense peaks, `configs/devices`, `configs/tco/default.yaml`).", ""]
    n = len(v)
    best_b2g = sum(r["b200_gaudi3_is_best"] for r in v)
    beats = sum(r["b200_gaudi3_beats_b200"] for r in v)
    comp = sum(r["h100_gaudi3_comparable"] for r in v)
    L += ["## Verdicts", ""]
    for cat in ("paper", "ours"):
        vc = [r for r in v if r["catalog"] == cat]
        fp8 = [r for r in vc if r["precision"] == "fp8"]
        L.append(f"- **{cat} catalog**: B200::Gaudi3 is the best pair in {sum(r['b200_gaudi3_is_best'] for r in vc)}"
                 f" of {len(vc)} settings ({sum(r['b200_gaudi3_is_best'] for r in fp8)} of {len(fp8)} in FP8), "
                 f"ahead of B200::B200 in {sum(r['b200_gaudi3_beats_b200'] for r in vc)} of {len(vc)}; "
                 f"H100::Gaudi3 is within 10% of B200::B200 or better in "
                 f"{sum(r['h100_gaudi3_comparable'] for r in vc)} of {len(vc)}.")
    L.append(f"- All settings: B200::Gaudi3 best in {best_b2g} of {n}, ahead of B200::B200 in {beats} of {n}; "
             f"H100::Gaudi3 comparable to B200::B200 in {comp} of {n}.")
    L += ["", res["discussion"], ""]
    L += ["## Best pair and the paper's pairs, per setting", "",
          "Benefit relative to H100::H100 (higher is better); `best` is the best of the 36 pairs.", "",
          "| catalog | model | prec | in/out | SLA | best | best benefit | B200::Gaudi3 | B200::B200 | H100::Gaudi3 |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in v:
        L.append(f"| {r['catalog']} | {r['model']} | {r['precision']} | {r['mix']} | {r['sla']} | {r['best']} | "
                 f"{fmt(r['best_benefit'])} | {fmt(r['b200_gaudi3'])} | {fmt(r['b200_b200'])} | {fmt(r['h100_gaudi3'])} |")
    L += ["", "## Every pair (benefit relative to H100::H100; '-' = no option meets the SLA)", ""]
    for s in res["settings"]:
        by = {(r["prefill"], r["decode"]): r for r in s["pairs"]}
        L += [f"**{s['catalog']} catalog, {s['model']}, {s['precision']}, {s['input']}/{s['output']}, {s['sla']}**"
              f" (H100::H100: ${by[('h100', 'h100')].get('per_million_tokens', float('nan')):.4f} per million tokens)", "",
              "| prefill \\ decode | " + " | ".join(NAMES[d] for d in DEVICES) + " |",
              "|---" * (len(DEVICES) + 1) + "|"]
        for x in DEVICES:
            L.append(f"| {NAMES[x]} | " + " | ".join(fmt(by[(x, y)].get("benefit")) for y in DEVICES) + " |")
        opts = []
        for d in DEVICES:
            r = by[(d, d)]
            if r.get("prefill_option"):
                p, q = r["prefill_option"], r["decode_option"]
                opts.append(f"{NAMES[d]} prefill tp{p['tp']} pp{p['pp']} b{p['batch']} {p['precision']} "
                            f"({p['ttft_ms']:.0f} ms), decode tp{q['tp']} pp{q['pp']} b{q['batch']} ({q['tbt_ms']:.1f} ms/token)")
        L += ["", "Options chosen: " + "; ".join(opts) + ".", ""]
    L += ["## Side checks", "", "### KV transfer links (the paper: 200-400 Gbps suffice up to 32K input tokens)", "",
          "Prefill on H100, FP16, batch 1, fastest TP x PP that fits; egress per device = KV / (prefill time x",
          "prefill devices) (the paper's peak egress formula with TTFT = the prefill time).", "",
          "| model | input tokens | KV GB | prefill ms | devices | egress Gbps/device | KV over one 400G link ms | <= 200 | <= 400 |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in res["link_check"]:
        L.append(f"| {r['model']} | {r['input_tokens']} | {r['kv_gb']:.2f} | {r['prefill_ms']:.0f} | "
                 f"{r['prefill_devices']} | {r['egress_gbps_per_device']:.0f} | {r['transfer_ms_one_400g_link']:.0f} | "
                 f"{'yes' if r['ok_200'] else 'no'} | {'yes' if r['ok_400'] else 'no'} |")
    L += ["", res["link_discussion"], "",
          "### TP degree (H100, FP16, batch 1, 4096-token prompt / context)", "",
          "| model | TP | prefill ms | of which all-reduce | decode step ms | of which all-reduce |",
          "|---|---|---|---|---|---|"]
    for r in res["tp_check"]:
        L.append(f"| {r['model']} | {r['tp']} | {r['prefill_ms']:.1f} | {r['prefill_allreduce_ms']:.1f} | "
                 f"{r['decode_step_ms']:.2f} | {r['decode_allreduce_ms']:.2f} |")
    L += ["", res["tp_discussion"], "", f"Run: {res['seconds']:.0f} s on {res['cpus']} CPUs "
          f"(load average {res['loadavg'][0]:.2f} at the start, shared machine).", ""]
    path.write_text("\n".join(L))


def chart(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, axes = plt.subplots(2, 2, figsize=(15, 8), sharey=False)
    for i, cat in enumerate(("paper", "ours")):
        for j, sla in enumerate(SLAS):
            ax = axes[i][j]
            ss = [s for s in res["settings"] if s["catalog"] == cat and s["sla"] == sla]
            labels = [f"{s['model'].replace('llama-3-', '')} {s['precision']}\n{s['input']}/{s['output']}" for s in ss]
            w = 0.8 / len(KEY_PAIRS)
            for k, (x, y) in enumerate(KEY_PAIRS):
                vals = []
                for s in ss:
                    r = next(r for r in s["pairs"] if r["prefill"] == x and r["decode"] == y)
                    vals.append(r.get("benefit") or 0.0)
                ax.bar(np.arange(len(ss)) + k * w - 0.4 + w / 2, vals, w, label=pair(x, y))
            ax.axhline(1.0, color="k", lw=0.6)
            ax.set_xticks(np.arange(len(ss)), labels, fontsize=7)
            ax.set_title(f"{cat} catalog, {sla}", fontsize=10)
            ax.set_ylabel("TCO benefit vs H100::H100")
    axes[0][0].legend(fontsize=7, ncol=3)
    fig.suptitle("Prefill::decode pairs, TCO benefit relative to H100::H100 (hetagent cost model + MILP)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def discuss(v, settings):
    def count(cat, key):
        vc = [r for r in v if r["catalog"] == cat]
        return sum(r[key] for r in vc), len(vc)
    winners = {}
    for r in v:
        winners.setdefault(r["catalog"], {}).setdefault(r["best"], 0)
        winners[r["catalog"]][r["best"]] += 1
    parts = []
    for cat in ("paper", "ours"):
        w = ", ".join(f"{k} {n}" for k, n in sorted(winners.get(cat, {}).items(), key=lambda t: -t[1]))
        parts.append(f"best pairs on the {cat} catalog: {w}")
    return "Winners by count (" + "; ".join(parts) + ")."


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="paper catalog, 8B FP16 only (a smoke test)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    t0, load = time.perf_counter(), os.getloadavg()
    settings = []
    for cat_name, cat_id, tco_id in CATALOGS[:1] if a.quick else CATALOGS:
        cat, tco = load_catalog(cat_id), load_tco(tco_id)
        for model in MODELS[:1] if a.quick else MODELS:
            for prec in PRECISIONS[:1] if a.quick else PRECISIONS:
                for pin, pout in MIXES:
                    for sla in SLAS:
                        s = run_setting(cat_name, cat, tco, model, prec, pin, pout, sla)
                        settings.append(s)
                        print(f"{cat_name} {model} {prec} {pin}/{pout} {sla}: "
                              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    v = verdicts(settings)
    cat = load_catalog("paper-2025")
    res = {"command": "python benchmarks/paper_reproduction.py", "rate_rps": RATE, "ttft_ms": TTFT_MS,
           "tbt_ms": TBT_MS, "settings": settings, "verdicts": v, "link_check": link_check(cat),
           "tp_check": tp_check(cat), "seconds": time.perf_counter() - t0, "cpus": os.cpu_count(),
           "loadavg": load}
    res["discussion"] = DISCUSSION if not a.quick else discuss(v, settings)
    res["discussion"] = discuss(v, settings) + "\n\n" + res["discussion"]
    res["link_discussion"], res["tp_discussion"] = LINK_DISCUSSION, TP_DISCUSSION
    if not a.no_write:
        out = ROOT / "benchmarks" / "results" / "paper_reproduction.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
        write_markdown(res, ROOT / "docs" / "paper_reproduction.md")
        chart(res, ROOT / "docs" / "paper_reproduction.png")
    if a.json:
        print(json.dumps({"verdicts": v, "seconds": res["seconds"]}, separators=(",", ":")))


DISCUSSION = """**Which findings reproduce, and why some do not.** (1) *B200::Gaudi3 is the best pair*: does **not**
reproduce: it is the best of 36 pairs in at most one setting. It is usually near the top and it beats
B200::B200 in most settings, so the weaker claim, that pairing B200 with Gaudi 3 is cheaper than all-B200,
mostly holds; but MI300X::MI300X, Gaudi3::Gaudi3 and pairs with a Gaudi 3 or MI300X prefill come out
cheaper. The reason is arithmetic in the paper's own table: the prefill is compute-bound, and per dollar
of TCO Gaudi 3 (1678 TFLOPS printed, $0.79/h with the paper's economics) gives 1.7x the FLOPs of B200
(2250, $1.78/h), and MI300X (1307, $0.99/h) 1.04x; decode is bandwidth-bound and MI300X (5300 GB/s,
192 GB) gives the most bandwidth and memory per dollar. With one efficiency for every vendor, as here
(our GPU efficiencies are fitted on A100/A40 and applied to every device's datasheet peaks), B200 can win
the prefill only where TTFT or memory excludes the cheaper devices. The paper's ranking needs Gaudi 3 and
MI300X to reach well below the fraction of peak that B200 reaches (or a B200 cheaper than $40,000); its
profiles are not published, so we cannot tell which. (2) *H100::Gaudi3 comparable to B200::B200*:
**reproduces** in most settings (see the counts above), the "older GPU plus newer accelerator" result,
for the same reason: Gaudi 3's decode is cheap per token, and the H100 prefill costs little at 512 input
tokens. Where it fails, it is mostly the interactive 70B decode-heavy mix (B200's memory lets the decode
batch far more within 20 ms per token, and the decode is then the cost) and the prefill-heavy FP8 mixes,
where H100's prefill dominates (in the paper catalog H100's FP8 equals its printed, sparse, FP16 rate). (3) The size of the benefit:
the best pairs reach 1.7-3.2x over H100::H100, the range of the later write-up (about 3x prefill-heavy,
up to 4x decode-heavy), but B200::Gaudi3 itself reaches 1.2-2.6x, not 3-4x. Limits of this
reproduction: batch is capped at 256 (the cost model's grid), TP stays within one node (8), replicas are
fluid (queueing is not modelled), KV transfer time is reported but not charged to TTFT or TBT."""

LINK_DISCUSSION = """The claim **reproduces** for egress: streaming the KV out of the prefill devices while the prefill runs
needs at most a few tens of Gb/s per device up to 32K tokens, well inside 200 Gb/s, because the prefill
time grows at least linearly with the prompt while the KV grows linearly too. Moving the whole KV of a
70B 32K prompt over one 400 Gb/s link takes about 0.2 s, so on a single link the hand-off is as long as a
short TTFT: sharding it over the TP group's NICs (one per device) or streaming it layer by layer is what
makes 200-400 Gb/s enough. The paper's ingress formula (KV / (TBT x decode devices)) would ask the whole
KV to arrive within one token time, which 400 Gb/s cannot do for 70B at 32K (about 0.2 s against 20 ms);
we read the claim as the egress case."""

TP_DISCUSSION = """**Reproduces** in shape: from TP1 to TP2 and TP4 both the prefill and the decode step get much faster;
from TP4 to TP8 the gain nearly vanishes (Llama 3 8B prefill 29.0 -> 27.0 ms, half of it all-reduce;
decode 4.4 -> 3.8 ms) because the two all-reduces per layer do not shrink with TP (their bytes are the
activations, and each step has a fixed latency). The cost model keeps TP within one node (8 devices), so it
does not show TP across nodes, where the paper's communication cost would overtake the gain outright."""

if __name__ == "__main__":
    main()
