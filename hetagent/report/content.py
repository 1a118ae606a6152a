"""The report's content as sections of simple blocks, shared by the HTML and Markdown renderers (so
both say the same thing). Blocks: ("p", text), ("kpis", [(label, value, detail)]), ("table", columns,
rows), ("chart", key, caption), ("note", text), ("list", [text]), ("h3", text), ("tag", kind, text)."""
from __future__ import annotations

from dataclasses import dataclass, field

SECTION_IDS = ("recommendation", "cost", "placement", "critical-path", "alternatives", "pareto",
               "sensitivity", "simulation", "measured", "assumptions")


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)


def money(v, unit: str = "") -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        s = f"${v:,.0f}"
    elif a >= 1:
        s = f"${v:,.2f}"
    elif a == 0:
        s = "$0"
    elif a >= 0.01:
        s = f"${v:.3f}"
    else:
        s = f"${v:.2e}" if a < 1e-6 else f"${v:.6f}".rstrip("0")
    return s + unit


def ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.1f} ms" if abs(v) < 10000 else f"{v / 1000:,.1f} s"


def pct(v, signed=False) -> str:
    if v is None:
        return "-"
    return f"{v:+.1%}" if signed else f"{v:.1%}"


def fleet_text(fleet) -> str:
    if not fleet:
        return "-"
    return ", ".join(f"{n} x {d}" for d, n in sorted(fleet.items(), key=lambda kv: (-kv[1], kv[0])) if n)


def _num(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_num(x)}" for k, x in v.items())
    return str(v)


_VERB = {"buy": "Buy", "rent": "Rent", "owned": "Use, from the owned inventory,"}


def recommendation(m: dict) -> Section:
    r = m["recommendation"]
    t, sla = r["tco"], r["sla"]
    mode = ((m["assumptions"].get("tco") or {}).get("mode")) or "buy"
    s = Section("recommendation", "Recommendation")
    s.blocks.append(("lead", f"{_VERB.get(mode, 'Buy')} {r['fleet_text']} for {', '.join(r['workflows'])}."))
    kpis = [("TCO per hour", money(t["per_hour"]), f"{money(t['per_month'])} per month, "
             f"{money(t['per_year'])} per year"),
            ("Per thousand requests", money(t["per_thousand_requests"]),
             f"{money(t['per_request'])} per request" + (f" at {r['rate_rps']:g} requests/s"
                                                        if r.get("rate_rps") else "")),
            ("Per million tokens", money(t["per_million_tokens"]) if t.get("per_million_tokens") else "-",
             "LLM prompt + generated tokens" if t.get("per_million_tokens") else "no LLM tokens")]
    b = r.get("best_homogeneous")
    if b:
        kpis.append(("Saving against the best homogeneous fleet", pct(b["saving_fraction"]),
                     f"all {b['device']}: {money(b['per_hour'])}/h; {money(b['saving_per_year'])} per year"))
    elif r.get("no_homogeneous_feasible"):
        kpis.append(("Saving against the best homogeneous fleet", "n/a",
                     "no homogeneous fleet meets the SLA: a mix is required"))
    if sla.get("sla_ms"):
        mg = sla.get("margin") or {}
        pctl = f"p{sla['percentile']:g} " if sla.get("percentile") else ""
        v = sla.get("validated")
        if v:
            at = sla.get(f"p{sla['percentile']:g}_ms") if sla.get("percentile") in (50, 95, 99) else None
            kpis.append(("SLA", f"{pctl}{sla['sla_ms']:,.0f} ms",
                         f"simulated p50 {ms(sla.get('p50_ms'))}, p95 {ms(sla.get('p95_ms'))}, p99 "
                         f"{ms(sla.get('p99_ms'))} over {v['requests']:,} requests; planned mean "
                         f"{ms(sla['end_to_end_ms'])}; " + ("holds" if v.get("holds") else "does NOT hold")
                         + (f" ({pctl.strip()} {ms(at)})" if at is not None else "")))
        else:
            kpis.append(("SLA", f"{pctl}{sla['sla_ms']:,.0f} ms",
                         f"planned mean {ms(sla['end_to_end_ms'])} (not simulated); margin {ms(mg.get('ms'))} "
                         f"({pct(mg.get('fraction'))}); " + ("meets" if sla.get("meets") else "VIOLATES")))
    else:
        kpis.append(("SLA", "none", f"predicted end to end {ms(sla.get('end_to_end_ms'))}"))
    s.blocks.append(("kpis", kpis))
    parts = [f"The plan places every operator of {', '.join(r['workflows'])} on {r['devices']} device(s) "
             f"({r['fleet_text']}) at a total cost of ownership of {money(t['per_hour'])} per hour"]
    if r.get("rate_rps"):
        parts.append(f" while serving {r['rate_rps']:g} requests per second")
    if sla.get("sla_ms"):
        parts.append(f", with a planned mean end-to-end latency of {ms(sla['end_to_end_ms'])} (queueing "
                     f"included) against an SLA of {sla['sla_ms']:,.0f} ms")
    parts.append(".")
    v = sla.get("validated")
    if v:
        parts.append(f" Simulated with {v['requests']:,} Poisson arrivals over {v.get('seeds', 1)} seeds, its "
                     f"p{sla['percentile']:g} latency " + ("holds" if v.get("holds") else "does NOT hold")
                     + f" (p50 {ms(sla.get('p50_ms'))}, p95 {ms(sla.get('p95_ms'))}, p99 {ms(sla.get('p99_ms'))}).")
        hd = sla.get("headroom") or {}
        if hd:
            parts.append(" To hold it, the plan was solved with headroom: " + ", ".join(
                ([f"{hd['sla_factor']:.3g} x the SLA" ] if hd.get("sla_factor") else [])
                + ([f"{hd['rate_factor']:.3g} x the rate"] if hd.get("rate_factor") else [])) + ".")
    if b:
        if b["saving_fraction"] is not None and b["saving_fraction"] > 0.0005:
            parts.append(f" The cheapest fleet of a single accelerator kind that meets the same SLA (all "
                         f"{b['device']}) costs {money(b['per_hour'])} per hour; this plan saves "
                         f"{pct(b['saving_fraction'])} of that ({money(b['saving_per_year'])} per year).")
        else:
            parts.append(f" The cheapest single-kind fleet (all {b['device']}) costs the same: the mix adds "
                         "nothing here, and this plan is that fleet.")
    s.blocks.append(("p", "".join(parts)))
    rob = r.get("robustness") or []
    if rob:
        flips = [e for e in rob if not e.get("holds")]
        lead = ("How sure is this? The cost model's figures for some devices are extrapolated (datasheet) or "
                "calibrated end to end only; each was slowed to the pessimistic end of its interval and the plan "
                "solved again. " + ("The recommendation holds for every one of them." if not flips else
                                    "It does not hold for all of them:"))
        s.blocks.append(("p", lead))
        s.blocks.append(("list", [e["text"] for e in rob]))
    sv = r.get("solver") or {}
    gap = sv.get("gap")
    s.blocks.append(("p", f"Solver: {sv.get('status', '-')}"
                     + (f", optimality gap {gap:.2%}" if gap is not None else "")
                     + (f", {sv.get('seconds'):.2f} s" if sv.get("seconds") is not None else "")
                     + f"; objective: {r.get('objective') or 'tco'}. All figures in this section are "
                     "predicted by the cost model unless the Assumptions section says otherwise."))
    for n in m.get("notes") or []:
        s.blocks.append(("note", n))
    return s


def cost(m: dict) -> Section:
    c = m["cost"]
    s = Section("cost", "Cost breakdown per device")
    s.blocks.append(("p", "What each device kind in the fleet costs per hour: the capital cost as an annuity "
                     "over the amortization period, electricity at TDP x utilization x PUE, and other "
                     "operating costs (rental fees and per-use prices appear here too)."))
    s.blocks.append(("chart", "cost", "Cost per hour by device: capex, power and other opex, stacked."))
    rows = [[r["device"], str(r["count"]), money(r["capex"]), money(r["power"]), money(r["opex"]),
             money(r["total"]), money(r["total"] * 8760)] for r in c["rows"]]
    rows.append(["total", str(sum(r["count"] for r in c["rows"])), money(sum(r["capex"] for r in c["rows"])),
                 money(sum(r["power"] for r in c["rows"])), money(sum(r["opex"] for r in c["rows"])),
                 money(c["total"]), money(c["total"] * 8760)])
    s.blocks.append(("table", ["device", "count", "capex $/h", "power $/h", "other opex $/h", "total $/h",
                               "per year"], rows))
    if c.get("bill"):
        s.blocks.append(("h3", "Bill of materials"))
        s.blocks.append(("p", "The servers (bought or owned) or cloud instances (rented) that hold the plan, and "
                         "what one costs per hour: accelerators, host and network share as annuities, power of "
                         "the whole server x PUE, facility (colocation per kW) and support, each from configs/tco; "
                         "an instance's price covers all of them."))
        brows = [[r["type"], r["kind"], f"{r['per_server']} x {r['device']}" if r["per_server"] else
                  f"{r['device']} (CPU-only)", str(r["servers"]), money(r["unit_per_hour"]),
                  *[money(r[k]) for k in ("accelerators", "host", "network", "power", "facility", "support")],
                  money(r["total_per_hour"]), r["note"] or "-"] for r in c["bill"]]
        s.blocks.append(("table", ["type", "kind", "holds", "count", "unit $/h", "accelerators", "host", "network",
                                   "power", "facility", "support", "total $/h", "note"], brows))
        src = [f"{r['type']}: {x}" for r in c["bill"] for x in r["sources"]]
        if src:
            s.blocks.append(("list", src))
    if c.get("unattributed_per_hour"):
        s.blocks.append(("note", f"{money(c['unattributed_per_hour'])}/h of the TCO is not attributed to a "
                         "device (per-use prices of transfers)."))
    return s


def placement(m: dict) -> Section:
    p = m["placement"]
    s = Section("placement", "Placement")
    s.blocks.append(("p", "Every operator, the device it runs on, its tensor- and pipeline-parallel degrees, "
                     "batch size, replicas, precision, predicted latency per execution, the resource that "
                     "bounds it, and where the figure comes from. `runs/request` is how many times an "
                     "operator runs per request on average (loop copies and branch arms weigh less than 1)."))
    if p.get("graph"):
        s.blocks.append(("chart", "graph", "The operator graph; each operator coloured by its device."))
    rows = []
    for r in p["rows"]:
        rows.append([r["operator"], r["kind"], r["device"], str(r["tp"]), str(r["pp"]), str(r["batch"]),
                     str(r["replicas"]), r["precision"], f"{r['latency_ms']:,.2f}", r["bound"],
                     f"{r['weight']:.2f}" if r.get("weight") is not None else "-", r["source"]])
    s.blocks.append(("table", ["operator", "kind", "device", "TP", "PP", "batch", "replicas", "precision",
                               "latency ms", "bound", "runs/request", "source"], rows))
    pools = p.get("pools") or []
    if pools:
        s.blocks.append(("h3", "Serving pools"))
        s.blocks.append(("p", "One engine serves every call to a model, as one vLLM or SGLang deployment does: "
                         "its replicas own whole devices (CPUs are time-shared), and its batch is what its load "
                         "fills, requests in flight = load / replicas x time in the engine (Little's law), "
                         "never a larger batch. A co-located engine runs its model's prompts and generations "
                         "together (chunked prefill); a prefill pool and a decode pool hand the KV cache "
                         "over the link. At a low rate a pool's batch is small and each request pays for "
                         "more device time: that is what a deployment would pay."))
        rows = [[q["id"], q["engine"], q["device"], f"{q['tp']}x{q['pp']}",
                 q["precision"] + (f" / KV {q['kv_precision']}" if q.get("kv_precision") else ""),
                 str(q["replicas"]), f"{q['batch']} of {q['max_batch']}", f"{q['load_rps']:,.3g}",
                 f"{q['latency_ms']:,.1f}" + (f" ({q['latency_interval_ms'][0]:,.0f}-{q['latency_interval_ms'][1]:,.0f})"
                                              if q.get("latency_interval_ms") else ""),
                 f"{q['tbt_ms']:.2f}" if q.get("tbt_ms") is not None else "-",
                 f"{q['memory_gb']:,.1f}", q.get("calibration_status") or "-"] for q in pools]
        s.blocks.append(("table", ["pool", "engine", "device", "TP x PP", "precision", "replicas",
                                   "batch (slots)", "calls/s", "latency ms (interval)", "TBT ms", "GB/device",
                                   "calibration"], rows))
    keep = p.get("retention") or []
    if keep:
        s.blocks.append(("h3", "KV cache across tool calls"))
        for r in keep:
            s.blocks.append(("p", retention_text(r)))
    return s


def retention_text(r: dict) -> str:
    """The retention choice of one LLM engine in words (report.model.retention_section's row)."""
    name = r["pool"].rsplit("/", 1)[0]
    where = f"{name} ({'co-located' if r['engine'] == 'colocated' else r['engine']} engine on {r['device']}, " \
            f"{r['replicas']} replica{'s' if r['replicas'] != 1 else ''})"
    reuse = (f"{pct(r['reusable_share'])} of its {r['prompt_tokens_per_s']:,.0f} prompt tokens per second are the "
             "previous iteration's prompt and output, which the engine computed once already")
    waiting = (r["reused_per_s"] or 0.0) * (r["mean_wait_ms"] or 0.0) / 1e3 / max(1, r["replicas"])
    held = (f"about {waiting:,.1f} requests per replica wait on their tools at a time (tools and code take "
            f"{ms(r['mean_wait_ms'])} between two calls on average), and the plan keeps room for "
            f"{r['retained_requests']} (at most 1% of them find it full), {r['retained_gb']:,.2f} GB per device")
    mode = r["kv_retention"]
    if mode == "resident":
        text = (f"{where} keeps each request's KV cache in device memory while the request waits on its tools "
                f"(kv_retention: resident). {reuse}; found in the cache they are not computed again, which saves "
                f"{pct(r['prefill_saved_share'])} of the prompt work. The price is memory: {held} that the batch "
                "cannot use.")
    elif mode == "offload":
        text = (f"{where} moves each request's KV cache to host memory while the request waits on its tools and "
                f"reloads it over the host link before the next call (kv_retention: offload). {reuse}; reloaded, "
                f"they are not computed again, which saves {pct(r['prefill_saved_share'])} of the prompt work at "
                f"the cost of the reload's latency. {held[0].upper() + held[1:]} of host memory; none of the "
                "device's.")
    else:
        why = ("it runs as a disaggregated prefill and decode pair, and a kept KV is priced only on a co-located "
               "engine" if r["engine"] != "colocated" else "keeping it was not the cheapest way to meet the SLA")
        text = (f"{where} recomputes the prefix at every call (kv_retention: none): {reuse}, but {why}.")
    rc = r.get("recompute")
    if rc is not None and mode != "none":
        if not rc.get("feasible"):
            text += " Solved again with every prefix recomputed, no plan meets the SLA: keeping the KV is what makes it."
        else:
            d = rc.get("delta_per_hour") or 0.0
            base = rc["per_hour"] - d
            if d > 0.005:
                text += (f" Solved again with every prefix recomputed, the cheapest plan costs {money(rc['per_hour'])}"
                         f"/hour, {money(d)}/hour ({pct(d / base if base else 0.0)}) more: keeping it pays.")
            else:
                text += (f" Solved again with every prefix recomputed, the cheapest plan costs {money(rc['per_hour'])}"
                         "/hour, no more: here keeping it shortens the prompts rather than the bill.")
    elif r.get("note"):
        text += f" ({r['note']}.)"
    return text


def critical_path(m: dict) -> Section:
    cp = m["critical_path"]
    s = Section("critical-path", "Critical path")
    sla = cp.get("sla_ms")
    e2e = cp.get("end_to_end_ms")
    s.blocks.append(("p", "The chain of operators that sets the end-to-end latency, each bar starting when its "
                     "inputs are ready; grey bars are transfers between devices. "
                     + (f"The last bar is the end-to-end latency, {ms(e2e)}, against the SLA of "
                        f"{sla:,.0f} ms (dashed line)." if sla else f"End to end: {ms(e2e)}; no SLA.")))
    s.blocks.append(("chart", "waterfall", "Latency waterfall of the critical path against the SLA."))
    rows = [[st["name"], st["device"] or "-", f"{st['start_ms']:,.1f}", f"{st['ms']:,.2f}",
             f"{st['start_ms'] + st['ms']:,.1f}"] for st in cp["steps"]]
    s.blocks.append(("table", ["step", "device", "start ms", "duration ms", "finish ms"], rows))
    if cp.get("note"):
        s.blocks.append(("note", cp["note"]))
    return s


def alternatives(m: dict) -> Section:
    a = m["alternatives"]
    s = Section("alternatives", "Alternatives")
    s.blocks.append(("p", "The recommended plan beside every homogeneous fleet: all operators a device kind "
                     "can run go on that kind, the rest on the cheapest CPU, and the same optimizer picks "
                     "parallelism, batch and counts. A fleet that misses the SLA is shown at the cost of "
                     "its cheapest placement, ignoring the SLA."))
    s.blocks.append(("chart", "alternatives", "TCO per hour of each alternative; green is the recommendation."))
    rows = []
    for r in sorted(a["rows"], key=lambda r: (not r["chosen"], not r["feasible"],
                                              r["per_hour"] if r["per_hour"] is not None else 1e18)):
        rows.append([("* " if r["chosen"] else "") + r["name"], "yes" if r["feasible"] else "no",
                     money(r["per_hour"]), money(r["per_thousand_requests"]), ms(r.get("end_to_end_ms")),
                     fleet_text(r.get("fleet")), pct(r.get("vs_plan"), signed=True) if r.get("vs_plan")
                     is not None else "-", r.get("note") or ""])
    s.blocks.append(("table", ["fleet", "meets SLA", "$/hour", "$/1000 requests", "end to end",
                               "devices", "vs recommended", "note"], rows))
    for n in a.get("notes") or []:
        s.blocks.append(("note", n))
    return s


def pareto(m: dict) -> Section:
    p = m["pareto"]
    s = Section("pareto", "TCO against SLA")
    if not p.get("available"):
        s.blocks.append(("note", p.get("note") or "The Pareto curve needs the problem solved again; not "
                         "available for this plan."))
        return s
    s.blocks.append(("p", "What a tighter or looser end-to-end SLA would cost: each point is the cheapest plan "
                     "found whose predicted latency meets that SLA (a fresh solve, or a known plan that "
                     "fits). The star is the recommended plan."))
    s.blocks.append(("chart", "pareto", "TCO per hour against the end-to-end SLA."))
    rows = [[f"{q['sla_ms']:,.0f}", money(q["per_hour"]) if q.get("feasible") else "infeasible",
             ms(q.get("end_to_end_ms")), fleet_text(q.get("fleet")), q.get("source") or "-"]
            for q in p["points"]]
    s.blocks.append(("table", ["SLA ms", "$/hour", "predicted end to end", "fleet", "found by"], rows))
    if p.get("note"):
        s.blocks.append(("note", p["note"]))
    return s


def _v(key: str, v: float) -> str:
    if key == "electricity_usd_per_kwh":
        return f"${v:.3f}"
    if key == "utilization":
        return f"{v:.0%}"
    return f"{v:g}"


def sensitivity(m: dict) -> Section:
    sv = m["sensitivity"]
    s = Section("sensitivity", "Sensitivity")
    if not sv.get("available"):
        s.blocks.append(("note", sv.get("note") or "The sensitivity sweeps need the problem solved again; not "
                         "available for this plan."))
        return s
    s.blocks.append(("p", "How the choice and the TCO move when one economic assumption changes and the others "
                     "stay as in the plan. Green: the cheapest plan found at that value (a fresh solve, or the "
                     "recommended or a homogeneous fleet re-priced); dashed: the recommended fleet held and "
                     "re-priced; dotted: the best homogeneous fleet re-priced. Shaded spans are where the "
                     "recommended device kinds change; the vertical line is the plan's value."))
    s.blocks.append(("chart", "sensitivity", "TCO per hour against electricity price, amortization and "
                     "utilization."))
    summary = []
    for key, p in sv["params"].items():
        if p.get("no_effect"):
            summary.append(f"{p['label']}: no effect on the TCO (the devices are priced per use or rented, "
                           "or the parameter does not enter their cost).")
        elif p["flips"]:
            fl = "; ".join(f"between {_v(key, f['between'][0])} and {_v(key, f['between'][1])} the "
                           f"recommendation changes from {fleet_text(f['from'])} to {fleet_text(f['to'])}"
                           for f in p["flips"])
            summary.append(f"{p['label']}: {fl}.")
        else:
            pts = [q for q in p["points"] if q.get("per_hour") is not None]
            if pts:
                summary.append(f"{p['label']}: the recommendation holds from {_v(key, pts[0]['value'])} to "
                               f"{_v(key, pts[-1]['value'])}; the TCO moves from {money(pts[0]['per_hour'])} "
                               f"to {money(pts[-1]['per_hour'])} per hour.")
    s.blocks.append(("list", summary))
    for key, p in sv["params"].items():
        s.blocks.append(("h3", p["label"]))
        rows = [[_v(key, q["value"]) + (" (plan)" if q.get("base") else ""), money(q.get("per_hour")),
                 fleet_text(q.get("fleet")), q.get("source") or q.get("status") or "-",
                 money(q.get("fixed_plan_per_hour")),
                 (f"all {q['best_homogeneous']}: {money(q['best_homogeneous_per_hour'])}"
                  if q.get("best_homogeneous") else "-")] for q in p["points"]]
        s.blocks.append(("table", ["value", "cheapest $/hour", "its fleet", "found by", "recommended fleet held",
                                   "best homogeneous"], rows))
    if sv.get("note"):
        s.blocks.append(("note", sv["note"]))
    return s


def simulation(m: dict) -> Section | None:
    sim = m.get("simulation")
    if not sim:
        return None
    s = Section("simulation", "Simulated latency")
    s.blocks.append(("tag", "simulated", f"from {sim['source']}"))
    lat = sim.get("latency_ms") or {}
    kpis = [(k, ms(lat[k]), "simulated") for k in ("p50", "p95", "p99", "mean") if lat.get(k) is not None]
    if sim.get("sla_attainment") is not None:
        kpis.append(("SLA attainment", pct(sim["sla_attainment"]), "requests within the SLA"))
    if kpis:
        s.blocks.append(("kpis", kpis))
    if sim.get("histogram") or lat:
        s.blocks.append(("chart", "simulation", "Distribution of simulated end-to-end latency."))
    extra = []
    if sim.get("requests") is not None:
        extra.append(f"{sim['requests']:,.0f} requests simulated")
    if sim.get("duration_s") is not None:
        extra.append(f"over {sim['duration_s']:,.0f} s")
    if sim.get("utilization"):
        extra.append("utilization " + ", ".join(f"{k} {v:.0%}" for k, v in sim["utilization"].items()))
    if extra:
        s.blocks.append(("p", "; ".join(extra) + "."))
    return s


def measured(m: dict) -> Section | None:
    run = m.get("measured")
    if not run:
        return None
    s = Section("measured", "Measured latency")
    em = run.get("emulated") or []
    kind = "emulated" if run.get("all_emulated") else ("measured" if not em else "measured and emulated")
    s.blocks.append(("tag", kind, f"from {run['source']}"))
    lat = run.get("latency_ms") or {}
    kpis = [(k, ms(lat[k]), kind) for k in ("p50", "p95", "p99", "mean") if lat.get(k) is not None]
    if run.get("sla_attainment") is not None:
        kpis.append(("SLA attainment", pct(run["sla_attainment"]), "requests within the SLA"))
    if kpis:
        s.blocks.append(("kpis", kpis))
    if run.get("per_stage"):
        s.blocks.append(("chart", "measured", "Per-stage latency, measured (p50) against predicted."))
        pred = {r["operator"]: r["latency_ms"] for r in m["placement"]["rows"]}
        rows = []
        for name, st in run["per_stage"].items():
            lt = st.get("latency_ms") or {}
            rows.append([name, ms(pred.get(name)), ms(lt.get("p50")), ms(lt.get("p95")),
                         "emulated" if name in em else "measured"])
        s.blocks.append(("table", ["operator", "predicted", "measured p50", "measured p95", "kind"], rows))
    if em:
        s.blocks.append(("note", "Emulated operators ran a stand-in on the CPU and were held to the cost "
                         "model's predicted time: their latency is not a measurement of the target device."))
    return s


def assumptions(m: dict) -> Section:
    a = m["assumptions"]
    s = Section("assumptions", "Assumptions and sources")
    s.blocks.append(("h3", "Which numbers are predicted, measured, simulated or emulated"))
    s.blocks.append(("table", ["figures", "kind", "detail"], [[p["what"], p["kind"], p["detail"]]
                                                               for p in m["provenance"]]))
    inp = a["inputs"]
    s.blocks.append(("h3", "Inputs of the plan"))
    rows = [["workflows", ", ".join(f"{w['name']} ({w['file']})" for w in inp["workflows"]) or "-"],
            ["fleet", str(inp["fleet"])], ["TCO assumptions", str(inp["tco"] or "default")],
            ["device catalog", str(inp["catalog"] or "default")],
            ["precisions", ", ".join(inp["precisions"] or []) or "all"],
            ["request rate", f"{inp['rate_rps']:g} requests/s (override)" if inp.get("rate_rps") else
             "each workflow's own"],
            ["SLA", f"{inp['sla_ms']:g} ms (override)" if inp.get("sla_ms") else "each workflow's own"],
            ["objective", str(inp.get("objective") or "tco")],
            ["soft SLA penalty", _num(inp.get("soft_sla_penalty")) if inp.get("soft_sla_penalty") else "none (hard SLA)"],
            ["measured profiles", "yes (embedded in plan.json)" if inp.get("profiles") else "none"],
            ["solver limits", f"{_num(inp.get('time_limit_s'))} s, gap {_num(inp.get('gap'))}"]]
    s.blocks.append(("table", ["input", "value"], rows))
    if a.get("tco"):
        t = a["tco"]
        s.blocks.append(("h3", f"TCO parameters ({t['name']}, mode {t['mode']})"))
        s.blocks.append(("table", ["parameter", "value", "why"],
                         [[p["name"], _num(p["value"]), p["why"] or "-"] for p in t["params"]]))
    cal = a.get("calibration") or {}
    s.blocks.append(("h3", "Calibration"))
    items = []
    g = cal.get("gpu")
    if g:
        res = g.get("residuals") or {}
        res_txt = "; ".join(f"{d}: median error {v['median_ape']:.1%}, p90 {v['p90_ape']:.1%}"
                            for d, v in res.items() if isinstance(v, dict) and "median_ape" in v)
        fits = g.get("fit_per_device") or {}
        items.append(f"GPU and accelerator efficiencies: fitted on {g.get('source')} (commit {g.get('commit')}, "
                     f"{g.get('rows')} rows, {g.get('date')}); {res_txt}. Method: {g.get('method')}.")
        if fits:
            items.append("Fit used per device: " + ", ".join(
                f"{d}: {'its own measurements' if f == d else 'the generic fit (a100 + a40)'}"
                for d, f in fits.items()) + ".")
    c = cal.get("cpu")
    if c:
        items.append(f"CPU operators: measured by `hetagent calibrate` on {c.get('host')} ({c.get('cores')} "
                     f"cores, {c.get('date')}): {', '.join(c.get('operators') or [])}. {c.get('note') or ''}")
    if cal.get("profiles"):
        items.append(f"Measured profile '{cal['profiles']}' overrides the cost model where it has figures "
                     "(the `source` column of the placement table says which).")
    s.blocks.append(("list", items or ["no calibration data found"]))
    s.blocks.append(("h3", "Devices: every figure with its source"))
    s.blocks.append(("p", "Devices in the recommended fleet first, then every other device an alternative used. "
                     "`estimate` marks figures derived rather than published."))
    for d in a["devices"]:
        hc = d.get("hour_cost") or {}
        head = f"{d['id']}: {d.get('name') or ''}" + (" (in the recommended fleet)" if d.get("in_fleet") else "")
        s.blocks.append(("h4", head))
        if hc:
            s.blocks.append(("p", f"Priced at {money(hc.get('total'))}/h per device: capex {money(hc.get('capex'))}, "
                             f"power {money(hc.get('power'))}, other opex {money(hc.get('opex'))}"
                             + (f"; figures from {d['file']}" if d.get("file") else "") + "."))
        rows = []
        for f in d.get("figures") or []:
            src = f.get("source") or ""
            if f.get("estimate"):
                src = (src + "; " if src else "") + "estimate: " + f["estimate"]
            if f.get("note"):
                src += (" (" + f["note"] + ")") if src else f["note"]
            if f.get("date"):
                src += f" [{f['date']}]"
            rows.append([f["figure"], _num(f.get("value")), src or "-"])
        if rows:
            s.blocks.append(("table", ["figure", "value", "source"], rows))
    fr = m.get("files_read") or {}
    if fr:
        s.blocks.append(("p", "Simulated and measured figures are read, when present, from "
                         + ", ".join(fr.get("simulation", [])) + " and " + ", ".join(fr.get("measured", []))
                         + " (beside plan.json)" + (": found " + ", ".join(fr["found"]) if fr.get("found")
                                                    else ": none found") + "."))
    tm = m.get("timings") or {}
    if tm:
        s.blocks.append(("p", "Report generation: " + ", ".join(f"{k[:-2].replace('_', ' ')} {v:.1f} s"
                                                               for k, v in tm.items()) + "."))
    return s


def sections(m: dict) -> list[Section]:
    out = [recommendation(m), cost(m), placement(m), critical_path(m), alternatives(m), pareto(m),
           sensitivity(m), simulation(m), measured(m), assumptions(m)]
    return [s for s in out if s is not None]
