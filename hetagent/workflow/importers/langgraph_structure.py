"""A LangGraph graph (as langgraph_probe describes it) written as structured workflow nodes.

The graph's edges are static (always taken; several from one node run side by side), waiting edges
(a join), conditional edges and Command destinations (one target is taken), and Send fan-outs. Cycles
are strongly connected components: each becomes a loop whose body starts at the node the rest of the
graph enters it by, with the edges back to that node removed; edges leaving the component are the
loop's exits (in the body they are dropped, after the loop they are its successors). What remains is
a DAG of nodes and loops. A node with a choice is followed by a branch: each target opens an arm that
holds what only that target reaches (everything whose predecessors all lie in the arm), a target that
other paths reach too is where the arms merge, and a target outside the scope (END, a loop exit) is
an empty arm.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hetagent.errors import HetagentError
from hetagent.workflow.importers.common import symbol, unique_id
from hetagent.workflow.importers.langgraph import (CPU_MS, FANOUT_TOOL_CALLS, FANOUT_WIDTH, INPUT_TEXT_TOKENS,
                                                   LOOP_EXPECTED, LOOP_MAX, OUTPUT_TOKENS, STATE_TOKENS,
                                                   TOOL_LATENCY_MS, TOOL_SCHEMA_TOKENS, model_fields)

START, END = "__start__", "__end__"


@dataclass
class Choice:
    targets: list[str]
    send: bool = False


@dataclass
class Unit:
    key: str
    members: list[str]
    loop: bool = False
    header: str | None = None
    preds: list["Unit"] = field(default_factory=list)
    succs: list["Unit"] = field(default_factory=list)
    choices: list[list[str]] = field(default_factory=list)   # unit keys or "" (outside: an empty arm)
    send: list[bool] = field(default_factory=list)


class GraphWriter:
    def __init__(self, self_host: dict[str, str], known_models: set[str]):
        self.self_host = {str(k).strip(): str(v).strip() for k, v in self_host.items()}
        self.used_self_host: set[str] = set()
        self.known = known_models
        self.ids: set[str] = set()
        self.notes: dict[str, list[str]] = {}
        self.warnings: list[str] = []
        self.models_seen: list[str] = []
        self.graph_nodes = 0
        self.graph_edges = 0

    def new_id(self, base: str) -> str:
        return unique_id(base, self.ids)

    def note(self, nid: str, line: str):
        self.notes.setdefault(nid, []).append(line)

    def warn(self, msg: str):
        if msg not in self.warnings:
            self.warnings.append(msg)

    def check_self_host(self):
        unused = set(self.self_host) - self.used_self_host
        if unused:
            seen = ", ".join(sorted(set(self.models_seen))) or "none"
            raise HetagentError(f"--self-host {sorted(unused)[0]}: the program uses no model of that name "
                                f"(models found: {seen})")

    # ---- a graph ----------------------------------------------------------------------------------------
    def workflow(self, name: str, g: dict, label: str) -> dict:
        return {"name": name, "description": f"Imported from LangGraph {label}"[:500], "rate": 1.0,
                "nodes": self.scope_nodes(g, ())}

    def scope_nodes(self, g: dict, path: tuple) -> list[dict]:
        """input, the graph's nodes, output: a whole (sub-)workflow."""
        sc = _Scope(self, g, path)
        inp = self.new_id("request" if not path else f"{path[-1]}_input")
        self.note(inp, f"text_tokens {INPUT_TEXT_TOKENS} (default: the request)")
        nodes = [{"id": inp, "kind": "input", "text_tokens": INPUT_TEXT_TOKENS}]
        body = sc.emit_top(inp)
        consumed = {i for n in body for i in n.get("inputs", [])}
        sinks = [n["id"] for n in body if n["id"] not in consumed] or [inp]
        out = self.new_id("response" if not path else f"{path[-1]}_output")
        return nodes + body + [{"id": out, "kind": "output", "inputs": sinks}]

    # ---- one graph node -----------------------------------------------------------------------------
    def node(self, info: dict, path: tuple) -> list[dict]:
        """Native nodes for one graph node, chained (the first takes the inputs, the last is consumed)."""
        name, kind = info["name"], info.get("kind", "code")
        where = "/".join(path + (name,))
        desc = f"LangGraph node '{name}'" + (f" in {'/'.join(path)}" if path else "")
        if kind != "human" and "interrupt" in (info.get("flags") or ()):
            self.warn(f"node '{where}' waits for a human (interrupt()) besides its work: the wait is not part "
                      "of any timing")
        if kind == "subgraph":
            sid = self.new_id(name)
            inner = self.scope_nodes(info["graph"], path + (name,))
            self.note(sid, f"a compiled graph used as node '{where}': an inline sub-agent")
            return [{"id": sid, "kind": "subagent", "description": desc,
                     "inline": {"name": symbol(name) or "subgraph", "nodes": inner}}]
        if kind == "agent":
            return [self.agent_at_run_time(info, desc, where)]
        if kind == "llm":     # tools it references are bound to its model (their schemas are in the prompt)
            return [self.llm(info, desc, where)]
        if kind == "tools":
            return [self.tools(name, info.get("tools") or [name], desc)]
        nid = self.new_id(name)
        if kind == "human":
            self.warn(f"node '{where}' waits for a human (interrupt()): read as CPU work; the wait is not "
                      "part of any timing")
            self.note(nid, "interrupt(): waits for a human; the wait is not timed")
        else:
            self.note(nid, f"cpu_ms {CPU_MS:g} (default: no model or tool found in its code)")
        return [{"id": nid, "kind": "code", "description": desc, "cpu_ms": CPU_MS}]

    def llm(self, info: dict, desc: str, where: str, nid: str | None = None) -> dict:
        nid = nid or self.new_id(info["name"])
        models = info.get("models") or []
        model = next((m for m in models if m.get("name")), models[0] if models else None)
        if len(models) > 1:
            self.note(nid, "models found: " + ", ".join(f"{m.get('provider')}/{m.get('name') or '?'}"
                                                          for m in models) + "; the first named is used")
        self.models_seen.append((model or {}).get("name") or "unknown")
        fields = model_fields(model, self.self_host, self.used_self_host, self.known,
                              self.warn, lambda m: self.note(nid, m))
        prompt = int(info.get("prompt_tokens") or 0)
        tools = max(int(info.get("bound_tools") or 0), len(info.get("tools") or ()))
        total = prompt + STATE_TOKENS + TOOL_SCHEMA_TOKENS * tools
        self.note(nid, f"prompt_tokens {total} (estimate: {prompt} of prompt text its code references, "
                       f"{STATE_TOKENS} of state" + (f", {TOOL_SCHEMA_TOKENS} x {tools} tool schemas" if tools
                                                     else "") + f"); output_tokens {OUTPUT_TOKENS} (default)")
        return {"id": nid, "kind": "llm", "description": desc, **fields, "prompt_tokens": total,
                "output_tokens": OUTPUT_TOKENS}

    def tools(self, name: str, tools: list[str], desc: str) -> dict:
        if len(tools) == 1:
            tid = self.new_id(name if name == tools[0] else f"{name}")
            self.note(tid, f"latency_ms {TOOL_LATENCY_MS:g} (default)")
            return {"id": tid, "kind": "tool", "description": desc, "tool": tools[0][:80],
                    "latency_ms": TOOL_LATENCY_MS}
        bid = self.new_id(name)
        k = len(tools)
        arms = []
        for i, t in enumerate(tools):
            tid = self.new_id(f"{name}_{t}")
            self.note(tid, f"latency_ms {TOOL_LATENCY_MS:g} (default)")
            arms.append({"name": t, "probability": 1.0 / k if i < k - 1 else 1.0 - (k - 1) / k,
                         "nodes": [{"id": tid, "kind": "tool", "tool": t[:80], "latency_ms": TOOL_LATENCY_MS}]})
        self.note(bid, f"{k} tools, probability {1 / k:.3g} each (default: equal)")
        return {"id": bid, "kind": "branch", "description": desc + ": the tool it runs", "arms": arms}

    def agent_at_run_time(self, info: dict, desc: str, where: str) -> dict:
        sid = self.new_id(info["name"])
        inp = self.new_id(f"{info['name']}_input")
        loop = self.new_id(f"{info['name']}_loop")
        llm = self.llm(info, "the prebuilt agent's model call", where, self.new_id(f"{info['name']}_model"))
        tools = self.tools(f"{info['name']}_tools", info.get("tools") or ["tool"], "the prebuilt agent's tools")
        tools["inputs"] = [llm["id"]]
        out = self.new_id(f"{info['name']}_output")
        self.note(sid, f"builds a prebuilt agent ({', '.join(f for f in info.get('flags', []) if f)}) at run "
                       "time: model <-> tools")
        self.note(loop, f"expected_iterations {LOOP_EXPECTED:g}, max_iterations {LOOP_MAX} (defaults)")
        return {"id": sid, "kind": "subagent", "description": desc,
                "inline": {"name": symbol(info["name"]) or "agent", "nodes": [
                    {"id": inp, "kind": "input", "text_tokens": INPUT_TEXT_TOKENS},
                    {"id": loop, "kind": "loop", "inputs": [inp], "expected_iterations": LOOP_EXPECTED,
                     "max_iterations": LOOP_MAX, "body": [llm, tools]},
                    {"id": out, "kind": "output", "inputs": [loop]}]}}


class _Scope:
    """One graph: its edges read, then emitted as structured nodes."""

    def __init__(self, w: GraphWriter, g: dict, path: tuple):
        self.w, self.path = w, path
        self.info = {n["name"]: n for n in g["nodes"]}
        self.order = {n: i for i, n in enumerate([START] + [n["name"] for n in g["nodes"]])}
        self.static: dict[str, list[str]] = {}
        self.names: dict[str, str] = {}        # unit key -> how an arm leading to it is named
        self.choices: dict[str, list[Choice]] = {}
        where = "/".join(path)
        names = list(self.info)
        for s, d in g["edges"]:
            self.static.setdefault(s, []).append(d)
        for srcs, d in g.get("waiting", []):
            for s in srcs:
                self.static.setdefault(s, []).append(d)
        w.graph_nodes += len(names)
        w.graph_edges += len(g["edges"]) + sum(len(s) for s, _ in g.get("waiting", []))
        for b in g.get("branches", []):
            ends = b.get("ends")
            if ends is None:
                ends = names + [END]
                w.warn(f"conditional edge '{b['name']}' from '{_q(where, b['source'])}' declares no targets "
                       "(no path_map and no Literal return type): read as able to reach every node")
            self.choices.setdefault(b["source"], []).append(Choice(list(ends), bool(b.get("send"))))
            w.graph_edges += len(ends)
        for n in g["nodes"]:
            flags = set(n.get("flags") or ())
            if n.get("ends"):
                self.choices.setdefault(n["name"], []).append(Choice(list(n["ends"]), "Send" in flags))
                w.graph_edges += len(n["ends"])
            elif flags & {"Command", "Send"}:
                used = " and ".join(sorted(flags & {"Command", "Send"}))
                w.warn(f"node '{_q(where, n['name'])}' routes with {used} but declares no destinations "
                       "(Command[Literal[...]] return type or destinations=): its targets are unknown, so "
                       "the graph is read as ending there")

    def targets(self, n: str) -> list[str]:
        out = list(self.static.get(n, []))
        for c in self.choices.get(n, []):
            out += c.targets
        return out

    # ---- units: nodes and loops ---------------------------------------------------------------------------
    def units(self, members: list[str], header: str | None) -> list[Unit]:
        """Members condensed into units (loops for cycles), with unit edges; `header`'s incoming edges
        from members are back edges (dropped)."""
        mset = set(members)

        def inside(a, d):
            return d in mset and not (header is not None and d == header)
        sccs = _tarjan(members, lambda a: [d for d in self.targets(a) if inside(a, d)])
        unit_of: dict[str, Unit] = {}
        units = []
        for comp in sccs:
            comp = sorted(comp, key=self.order.get)
            cyclic = len(comp) > 1 or any(d == comp[0] for d in self.targets(comp[0]) if inside(comp[0], d))
            if cyclic:
                entered = [n for n in comp if any(n in self.targets(p) for p in mset | {START}
                                                  if p not in comp)]
                u = Unit("loop:" + comp[0], comp, True, (entered or comp)[0])
            else:
                u = Unit(comp[0], comp)
            units.append(u)
            self.names[u.key] = f"loop {u.header}" if u.loop else comp[0]
            for n in comp:
                unit_of[n] = u
        for u in units:
            if u.loop:
                self.loop_exits(u, mset, header, unit_of, inside)
                continue
            n = u.members[0]
            for d in self.static.get(n, []):
                if inside(n, d):
                    _link(u, unit_of[d])
            for c in self.choices.get(n, []):
                arms = []
                for d in c.targets:
                    if inside(n, d):
                        arms.append(unit_of[d].key)
                    elif header is None and d not in mset:
                        arms.append("")            # END: an empty arm (in a loop body: the loop's exit)
                arms = list(dict.fromkeys(arms))
                keyed = {x.key: x for x in units}
                one_call = c.send and len(arms) == 1 and self.width(keyed[arms[0]] if arms[0] else None) == 1
                if len(arms) == 1 and arms[0] and (not c.send or one_call):
                    _link(u, keyed[arms[0]])
                elif len(arms) > 1 or (arms and arms[0] and c.send):   # a Send to one node: still a fan-out
                    u.choices.append(arms)
                    u.send.append(c.send)
                    for a in arms:
                        if a:
                            _link(u, keyed[a])
        return sorted(units, key=lambda u: self.order.get(u.members[0], 0))

    def loop_exits(self, u: Unit, mset: set, header: str | None, unit_of: dict, inside):
        """Edges leaving a loop's members: its successors (several at the top level: a branch)."""
        dests = []
        for n in u.members:
            for d in self.targets(n):
                if d not in u.members and (d not in mset or inside(n, d)) and d not in dests:
                    dests.append(d)
        inner = [d for d in dests if d in mset]
        if header is None and len(dests) > 1:
            u.choices.append([unit_of[d].key if d in inner else "" for d in dests])
            u.send.append(False)
        for d in inner:
            _link(u, unit_of[d])

    # ---- emission -------------------------------------------------------------------------------------------
    def emit_top(self, inp: str) -> list[dict]:
        members = list(self.info)
        start = Unit(START, [START])
        units = self.units(members, None)
        keyed = {u.key: u for u in units}
        unit_of = {n: u for u in units for n in u.members}
        for d in self.static.get(START, []):
            if d in unit_of:
                _link(start, unit_of[d])
        for c in self.choices.get(START, []):
            arms = list(dict.fromkeys(unit_of[d].key if d in unit_of else "" for d in c.targets))
            start.choices.append(arms)
            start.send.append(c.send)
            for a in arms:
                if a:
                    _link(start, keyed[a])
        reach = _reachable(start)
        lost = [n for u in units if u not in reach for n in u.members]
        if lost:
            self.w.warn(f"node(s) {', '.join(_q('/'.join(self.path), n) for n in lost)} cannot be reached from "
                        "START: left out")
        return self.emit([start] + [u for u in units if u in reach], {START: [inp]})

    def emit(self, units: list[Unit], entry: dict) -> list[dict]:
        """Native nodes for units in topological order; `entry`: unit key -> ids it is consumed as."""
        inscope = {u.key for u in units} | set(entry)
        anchors: dict[str, list[str]] = dict(entry)
        absorbed: set[str] = set()
        nodes: list[dict] = []
        for u in _topo(units):
            if u.key in absorbed:
                continue
            if u.key not in anchors:
                ins = []
                for p in u.preds:
                    if p.key in inscope:
                        ins += [a for a in anchors.get(p.key, []) if a not in ins]
                new = self.unit_nodes(u)
                if ins:
                    new[0]["inputs"] = ins
                nodes += new
                anchors[u.key] = [new[-1]["id"]]
            for arms, send in zip(u.choices, u.send):
                bnode, members = self.branch(u, arms, send, units, absorbed)
                bnode["inputs"] = list(anchors[u.key])
                nodes.append(bnode)
                for k in members:
                    anchors[k] = [bnode["id"]]
                absorbed |= members
        return nodes

    def branch(self, u: Unit, arms: list[str], send: bool, units: list[Unit], absorbed: set):
        keyed = {x.key: x for x in units}
        bid = self.w.new_id(f"{u.members[0] if u.key != START else 'start'}_route")
        taken: set[str] = set()
        out_arms = []
        k = len(arms)
        for i, a in enumerate(arms):
            members: list[Unit] = []
            if a and a in keyed and a not in absorbed:
                t = keyed[a]
                if all(p is u for p in t.preds):
                    members = [t]
                    grow = True
                    while grow:
                        grow = False
                        for x in units:
                            if x in members or x.key in absorbed or x.key in taken or x is u:
                                continue
                            if x.preds and all(p in members for p in x.preds):
                                members.append(x)
                                grow = True
            taken |= {m.key for m in members}
            name = self.names.get(a, "end") + ("" if members or not a else " (after the branch)")
            arm_nodes = self.emit_arm(members, send)
            out_arms.append({"name": name, "probability": 1.0 / k if i < k - 1 else 1.0 - (k - 1) / k,
                             "nodes": arm_nodes})
        self.w.note(bid, f"{k} paths, probability {1 / k:.3g} each (default: equal)"
                    + ("; a Send fan-out" if send else ""))
        where = "/".join(self.path + (u.members[0],)) if u.key != START else "/".join(self.path + ("START",))
        return {"id": bid, "kind": "branch", "description": f"LangGraph routing after '{where}'",
                "arms": out_arms}, taken

    def emit_arm(self, members: list[Unit], send: bool) -> list[dict]:
        if not members:
            return []
        if not send:
            return self.emit(members, {})
        first, rest = members[0], members[1:]
        width = self.width(first)
        if width == 1:
            return self.emit(members, {})
        copies = []
        for i in range(width):
            sid = self.w.new_id(f"{first.members[0]}_send_{i + 1}")
            inp = self.w.new_id(f"{sid}_input")
            inner = self.unit_nodes(first)
            inner[0]["inputs"] = [inp]
            out = self.w.new_id(f"{sid}_output")
            self.w.note(sid, f"Send fan-out copy {i + 1} of {width} (default width)")
            copies.append({"id": sid, "kind": "subagent", "description": f"a Send to '{first.members[0]}'",
                           "inline": {"name": symbol(f"{first.members[0]}_send") or "send", "nodes": [
                               {"id": inp, "kind": "input", "text_tokens": INPUT_TEXT_TOKENS}] + inner + [
                               {"id": out, "kind": "output", "inputs": [inner[-1]["id"]]}]}})
        return copies + self.emit(rest, {first.key: [c["id"] for c in copies]})

    def width(self, target: Unit | None) -> int:
        """Copies a Send to this unit runs: one per tool call for a tools node, else FANOUT_WIDTH."""
        if target is not None and all(self.info.get(n, {}).get("kind") == "tools" for n in target.members):
            return FANOUT_TOOL_CALLS
        return FANOUT_WIDTH

    def unit_nodes(self, u: Unit) -> list[dict]:
        if not u.loop:
            nodes = []
            for n in self.w.node(self.info[u.members[0]], self.path):
                if nodes:
                    n["inputs"] = [nodes[-1]["id"]]
                nodes.append(n)
            return nodes
        lid = self.w.new_id(f"{u.header}_loop")
        body_units = self.units(u.members, u.header)
        entry = [b for b in body_units if u.header in b.members]
        body = self.emit(_topo(entry + [b for b in body_units if b not in entry]), {})
        self.w.note(lid, f"the cycle {' -> '.join(u.members)}: expected_iterations {LOOP_EXPECTED:g}, "
                         f"max_iterations {LOOP_MAX} (defaults)")
        return [{"id": lid, "kind": "loop", "description": f"LangGraph cycle through '{u.header}'",
                 "expected_iterations": LOOP_EXPECTED, "max_iterations": LOOP_MAX, "body": body}]


def _q(where: str, name: str) -> str:
    return f"{where}/{name}" if where else name


def _link(a: Unit, b: Unit):
    if b not in a.succs:
        a.succs.append(b)
    if a not in b.preds:
        b.preds.append(a)


def _reachable(start: Unit) -> list[Unit]:
    seen, stack = [start], [start]
    while stack:
        for s in stack.pop().succs:
            if s not in seen:
                seen.append(s)
                stack.append(s)
    return seen


def _topo(units: list[Unit]) -> list[Unit]:
    """Kahn's order, stable in the given order; units in a cycle (none after condensation) last."""
    inset = set(id(u) for u in units)
    indeg = {id(u): sum(1 for p in u.preds if id(p) in inset) for u in units}
    out, ready = [], [u for u in units if indeg[id(u)] == 0]
    while ready:
        u = ready.pop(0)
        out.append(u)
        for s in u.succs:
            if id(s) in indeg:
                indeg[id(s)] -= 1
                if indeg[id(s)] == 0:
                    ready.append(s)
    return out + [u for u in units if u not in out]


def _tarjan(nodes: list[str], succ) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = [0]

    def visit(v):
        work = [(v, iter(succ(v)))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on.discard(x)
                        comp.append(x)
                        if x == node:
                            break
                    out.append(comp)
            elif nxt not in index:
                index[nxt] = low[nxt] = counter[0]
                counter[0] += 1
                stack.append(nxt)
                on.add(nxt)
                work.append((nxt, iter(succ(nxt))))
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
    for v in nodes:
        if v not in index:
            visit(v)
    return out
