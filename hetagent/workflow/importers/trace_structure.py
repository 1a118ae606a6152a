"""`import traces --structure WORKFLOW`: a given workflow's structure, the traces' numbers.

Each LLM and tool call is matched to a node of the workflow: the LangGraph node it ran in (the span's
`langgraph_node` metadata, or the nearest enclosing span named like a node) against each node's source
name (`LangGraph node 'X'` in its description, else its id); a tool call to the tool node of that name
(tools of a ToolNode are the arms of a branch). Then, per node, from its matched calls:
  - loop: expected iterations = runs of its first matched body node per trace that entered it, max the
    most seen;
  - branch: each arm's share = runs of its first matched node / runs of the node feeding the branch (or
    traces, at the top); arms with no matched node (an edge to END) share what is left;
  - llm: tokens so that expected tokens per request (the node's runs per request in the fitted structure
    times its tokens) equal the traces', the model's price and latency as `import traces` fits them;
  - tool: latency and spread of its calls.
Nodes no call matched keep their numbers (a warning lists them); calls that match no node are counted in
the summary and reported. Sub-agents given as files are left as they are (a warning says so).
"""
from __future__ import annotations

import copy
import re
import statistics
from collections import defaultdict
from pathlib import Path

from hetagent.workflow import loader, safeyaml
from hetagent.workflow.importers.trace_calls import Call, TraceSet, graph_node_of

_SOURCE = re.compile(r"LangGraph node '([^']+)'(?: in (\S+))?")


def fit_structure(path, ts: TraceSet, writer, *, config_dir=None) -> tuple[dict, Path]:
    loader.load(path, config_dir=config_dir)          # the structure must be a valid workflow first
    data = copy.deepcopy(safeyaml.load(safeyaml.read_text(path), str(path)).data)
    fit = _Fit(ts, writer, data)
    fit.run()
    return data, Path(path).resolve().parent


class _Fit:
    def __init__(self, ts: TraceSet, writer, data: dict):
        self.ts, self.w, self.data = ts, writer, data
        self.nodes: list[tuple[dict, tuple]] = []          # (node, path of names of enclosing sub-agents)
        self.parent: dict[int, dict] = {}                   # id(node) -> its container node (loop/branch)
        self._index(data["nodes"], (), None)
        for n, _ in self.nodes:
            writer.ids.add(n["id"])
        self.calls: dict[str, list[Call]] = defaultdict(list)     # node id -> matched calls
        self.runs: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))   # id -> trace -> runs

    def _index(self, nodes, path, container):
        for n in nodes:
            self.nodes.append((n, path))
            if container is not None:
                self.parent[id(n)] = container
            if n["kind"] == "loop":
                self._index(n["body"], path, n)
            elif n["kind"] == "branch":
                for a in n["arms"]:
                    self._index(a["nodes"], path, n)
            elif n["kind"] == "subagent":
                if isinstance(n.get("inline"), dict):
                    self._index(n["inline"]["nodes"], path + (n["id"],), None)
                else:
                    self.w.warn(f"sub-agent '{n['id']}' is the file {n.get('workflow')}: its numbers are left as "
                                "they are (inline it to fit them)")

    @staticmethod
    def source(n: dict) -> tuple[str, str]:
        m = _SOURCE.search(n.get("description") or "")
        return (m.group(1), m.group(2) or "") if m else (n["id"], "")

    # ---- matching -----------------------------------------------------------------------------------
    def run(self):
        unmatched = defaultdict(int)
        for t in self.ts.traces:
            for c in _flat(t.steps):
                node, run = self.match(c)
                if node is None:
                    unmatched[c.kind] += 1
                    continue
                self.calls[node["id"]].append(c)
                self.runs[node["id"]][t.id].add(run)
        for kind, k in unmatched.items():
            self.w.warn(f"{k} {kind} call(s) match no node of the structure: not in its numbers (their tokens "
                        "are in the summary's tokens_per_request)")
        self.fit_scope(self.data["nodes"], None)
        weights: dict[str, float] = {}
        self.weigh(self.data["nodes"], 1.0, weights)
        untouched = []
        for n, _ in self.nodes:
            calls = self.calls.get(n["id"])
            if n["kind"] == "llm":
                if calls:
                    self.fill_llm(n, calls, weights.get(n["id"], 0.0))
                else:
                    untouched.append(n["id"])
            elif n["kind"] == "tool":
                if calls:
                    new = self.w.tool_node(n["id"], n.get("tool", n["id"]), calls)
                    for k in ("latency_ms", "latency_cv", "result_tokens", "response_bytes", "request_bytes"):
                        if k in new:
                            n[k] = new[k]
                else:
                    untouched.append(n["id"])
        if untouched:
            self.w.warn(f"no call matched node(s) {', '.join(untouched)}: their numbers are the structure's")

    def match(self, c: Call) -> tuple[dict | None, str]:
        kinds = ("llm",) if c.kind == "llm" else ("tool",)
        chain = self.context(c)
        if c.kind == "tool":
            named = [n for n, p in self.nodes if n["kind"] == "tool" and n.get("tool") == c.name]
            if named:
                return self.pick(named, chain), c.span.id
        for name, span_id in chain:
            cands = [n for n, p in self.nodes if n["kind"] in kinds and self.source(n)[0] == name]
            if cands:
                return self.pick(cands, chain), span_id
        llms = [n for n, _ in self.nodes if n["kind"] in kinds]
        if c.kind == "llm" and len(llms) == 1:
            return llms[0], c.span.id
        return None, ""

    def context(self, c: Call) -> list[tuple[str, str]]:
        """(name, span id) of the call's own graph node and of every enclosing span, nearest first."""
        out = []
        s = c.span
        node = graph_node_of(s)
        if node:
            out.append((node, s.parent or s.id))
        seen = set()
        while s is not None and s.id not in seen:
            seen.add(s.id)
            parent = self.ts.by_id.get(s.parent) if s.parent else None
            if parent is None:
                break
            out.append((parent.name, parent.id))
            g = graph_node_of(parent)
            if g and g != parent.name:
                out.append((g, parent.id))
            s = parent
        return out

    def pick(self, cands: list[dict], chain) -> dict:
        names = {n for n, _ in chain}
        for n in cands:
            where = self.source(n)[1]
            if where and all(part in names for part in where.split("/")):
                return n
        return cands[0]

    # ---- loops and branches ------------------------------------------------------------------------
    def count(self, n: dict) -> int:
        return sum(len(v) for v in self.runs.get(n["id"], {}).values())

    def first_matched(self, nodes: list[dict]) -> dict | None:
        for n in nodes:
            if n["kind"] in ("llm", "tool") and self.runs.get(n["id"]):
                return n
            inner = (n["body"] if n["kind"] == "loop" else
                     [x for a in n["arms"] for x in a["nodes"]] if n["kind"] == "branch" else [])
            found = self.first_matched(inner)
            if found is not None:
                return found
        return None

    def entries(self, nodes: list[dict]) -> int | None:
        """How often a sequence of nodes (a branch arm) was entered: the runs of its first node that any
        call matched; a loop is entered once per trace its body ran in; None when nothing matched."""
        for n in nodes:
            if n["kind"] in ("llm", "tool"):
                if self.runs.get(n["id"]):
                    return self.count(n)
            elif n["kind"] == "loop":
                head = self.first_matched(n["body"])
                if head is not None:
                    return sum(1 for v in self.runs[head["id"]].values() if v)
            elif n["kind"] == "branch":
                inner = [self.entries(a["nodes"]) for a in n["arms"]]
                if any(inner):
                    return sum(x for x in inner if x)
        return None

    def fit_scope(self, nodes: list[dict], outer_count: int | None):
        by_id = {n["id"]: n for n in nodes}
        for n in nodes:
            if n["kind"] == "loop":
                head = self.first_matched(n["body"])
                if head is not None:
                    per_trace = [len(v) for v in self.runs[head["id"]].values() if v]
                    n["expected_iterations"] = max(1.0, statistics.mean(per_trace))
                    n["max_iterations"] = max(max(per_trace), 1)
                    self.w.notes.setdefault(n["id"], []).append(
                        f"iterations from the runs of '{head['id']}': mean {statistics.mean(per_trace):.4g} over "
                        f"{len(per_trace)} trace(s), max {max(per_trace)}")
                self.fit_scope(n["body"], None)
            elif n["kind"] == "branch":
                feeding = [by_id[i] for i in n.get("inputs", []) if i in by_id]
                reached = max((self.count(f) for f in feeding if f["kind"] in ("llm", "tool")), default=0)
                if not reached:
                    reached = outer_count if outer_count is not None else len(self.ts.traces)
                counts = [self.entries(a["nodes"]) for a in n["arms"]]
                seen = sum(c for c in counts if c)
                if seen:
                    rest = max(0, reached - seen)
                    empty = [i for i, c in enumerate(counts) if c is None]
                    shares = [c if c is not None else (rest / len(empty) if empty else 0) for c in counts]
                    total = sum(shares)
                    probs = [s / total for s in shares]
                    probs[-1] = 1.0 - sum(probs[:-1])
                    for a, p in zip(n["arms"], probs):
                        a["probability"] = p
                    self.w.notes.setdefault(n["id"], []).append(
                        "shares from the traces: " + ", ".join(
                            f"'{a['name']}' {c if c is not None else 'unseen'}" for a, c in zip(n["arms"], counts))
                        + f" of {max(reached, seen)} run(s)")
                for a in n["arms"]:
                    self.fit_scope(a["nodes"], None)
            elif n["kind"] == "subagent" and isinstance(n.get("inline"), dict):
                self.fit_scope(n["inline"]["nodes"], None)

    def weigh(self, nodes: list[dict], w: float, out: dict):
        for n in nodes:
            out[n["id"]] = w
            if n["kind"] == "loop":
                self.weigh(n["body"], w * float(n["expected_iterations"]), out)
            elif n["kind"] == "branch":
                for a in n["arms"]:
                    self.weigh(a["nodes"], w * float(a["probability"]), out)
            elif n["kind"] == "subagent" and isinstance(n.get("inline"), dict):
                self.weigh(n["inline"]["nodes"], w, out)

    def fill_llm(self, n: dict, calls: list[Call], weight: float):
        if weight <= 0:
            self.w.warn(f"node '{n['id']}' ran in the traces but the structure never reaches it: tokens per call kept")
            weight = None
        new = self.w.llm_node(n["id"], calls, per_request=weight)
        n["prompt_tokens"], n["output_tokens"] = new["prompt_tokens"], new["output_tokens"]
        if "hosted" in n and "hosted" in new:
            if n["hosted"].get("model") in (None, "", "unknown"):
                n["hosted"] = new["hosted"]
            else:
                n["hosted"]["latency_ms"] = new["hosted"]["latency_ms"]
                n["hosted"]["tokens_per_second"] = new["hosted"]["tokens_per_second"]


def _flat(steps) -> list[Call]:
    out = []
    for st in steps:
        for c in st.calls:
            if c.kind == "agent":
                out += _flat(c.steps)
            else:
                out.append(c)
    return out
