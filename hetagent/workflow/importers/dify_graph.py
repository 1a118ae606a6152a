"""The Dify graph as structured blocks: nodes and edges read and checked, branches found from
`sourceHandle`, then the native nodes wired (`inputs` from edges and variable references, a reference
into a container naming the container, mid-flow answers made transparent) and sorted.

A mixin of dify._Converter, which holds the state these methods share (nodes, edges, info, ...)."""
from __future__ import annotations

import re

from hetagent.workflow.importers.common import ID_RE, fix_surrogates
from hetagent.workflow.importers.dify_defaults import (_CONTAINERS, _MARKERS, FAIL_PROBABILITY, _REF_RE)


class _Block:
    """A structured piece of a scope: a plain node, or a branching node with its arms."""

    def __init__(self, did: str, arms: list | None = None):
        self.did, self.arms = did, arms  # arms: [(handle, name, probability, [blocks])]



class GraphMixin:
    # ---- graph --------------------------------------------------------------------------------
    def graph(self, graph: dict, features: dict):
        raw_nodes = graph.get("nodes", [])
        raw_edges = graph.get("edges", [])
        if not isinstance(raw_nodes, list):
            self.fail("`workflow.graph.nodes` is not a list", ("workflow", "graph", "nodes"))
        if not isinstance(raw_edges, list):
            self.fail("`workflow.graph.edges` is not a list", ("workflow", "graph", "edges"))
        npath = ("workflow", "graph", "nodes")
        self.nodes: dict[str, dict] = {}      # dify id -> data (with _type, _title, _path, _parent)
        order: list[str] = []
        skipped: set[str] = set()
        for i, n in enumerate(raw_nodes):
            if not isinstance(n, dict) or n.get("id") in (None, ""):
                self.fail(f"graph node #{i} has no `id`", npath + (i,))
            did = str(n["id"])
            if did in self.nodes or did in skipped:
                self.fail(f"Dify node '{did}': duplicate node id", npath + (i, "id"))
            data = n.get("data")
            wrapper = str(n.get("type") or "")
            if wrapper == "custom-note":
                skipped.add(did)
                continue
            if not isinstance(data, dict):
                self.fail(f"Dify node '{did}': no `data` mapping", npath + (i,))
            typ = str(data.get("type") or "")
            title = fix_surrogates(str(data.get("title") or ""))
            if typ in _MARKERS or wrapper in ("custom-iteration-start", "custom-loop-start"):
                skipped.add(did)
                parent = n.get("parentId")
                if parent not in (None, "") and str(parent) not in [str(x.get("id")) for x in raw_nodes
                                                                    if isinstance(x, dict)]:
                    self.fail(f"Dify node '{did}': its container '{parent}' (parentId) does not exist",
                              npath + (i, "parentId"))
                continue
            if not typ:
                typ = "(no type)"
            parent = n.get("parentId")
            if parent in (None, ""):
                if data.get("isInIteration") and data.get("iteration_id"):
                    parent = data["iteration_id"]
                elif data.get("isInLoop") and data.get("loop_id"):
                    parent = data["loop_id"]
            rec = {"data": data, "type": typ, "title": title, "path": npath + (i,),
                   "parent": str(parent) if parent not in (None, "") else None, "id": did}
            self.nodes[did] = rec
            order.append(did)
        if not self.nodes:
            self.fail("the Dify graph has no nodes", npath)
        for did in order:
            rec = self.nodes[did]
            p = rec["parent"]
            if p is not None:
                if p not in self.nodes:
                    self.fail(f"Dify node '{did}' ({rec['title']}): its container '{p}' (parentId) "
                              f"does not exist", rec["path"] + ("parentId",))
                if self.nodes[p]["type"] not in _CONTAINERS:
                    self.fail(f"Dify node '{did}' ({rec['title']}): its container '{p}' is a "
                              f"{self.nodes[p]['type']} node, not an iteration or loop",
                              rec["path"] + ("parentId",))
        # containment must not cycle
        for did in order:
            seen, p = {did}, self.nodes[did]["parent"]
            while p is not None:
                if p in seen:
                    self.fail(f"Dify node '{did}': containers (parentId) form a cycle",
                              self.nodes[did]["path"])
                seen.add(p)
                p = self.nodes[p]["parent"]
        self.order = {d: k for k, d in enumerate(order)}
        # edges
        self.edges: list[tuple[str, str, str]] = []  # (source, handle, target) between kept nodes
        epath = ("workflow", "graph", "edges")
        for i, e in enumerate(raw_edges):
            if not isinstance(e, dict):
                self.fail(f"graph edge #{i} is not a mapping", epath + (i,))
            eid = e.get("id") or f"#{i}"
            for end in ("source", "target"):
                v = e.get(end)
                if v in (None, ""):
                    self.fail(f"Dify edge '{eid}': no `{end}`", epath + (i,))
                v = str(v)
                if v not in self.nodes and v not in skipped:
                    other = "source" if end == "target" else "target"
                    self.fail(f"Dify edge '{eid}': {end} node '{v}' does not exist (its {other} is "
                              f"'{e.get(other)}')", epath + (i, end))
            s, t = str(e["source"]), str(e["target"])
            if s in skipped or t in skipped:
                continue
            handle = str(e.get("sourceHandle") or "source")
            self.edges.append((s, handle, t))
        self.preds: dict[str, list[tuple[str, str]]] = {d: [] for d in self.nodes}
        self.succs: dict[str, list[tuple[str, str]]] = {d: [] for d in self.nodes}
        for s, h, t in self.edges:
            if (s, h) not in self.preds[t]:
                self.preds[t].append((s, h))
            if (t, h) not in self.succs[s]:
                self.succs[s].append((t, h))
        # build
        self.exit: dict[tuple, str] = {}       # (dify id, copy) -> native id successors consume
        self.entry: dict[tuple, str] = {}      # (dify id, copy) -> native id that takes the inputs
        self.branch_of: dict[tuple, str] = {}  # (dify id, copy) -> native branch container id
        self.info: dict[str, dict] = {}        # native id -> {chain, did, copy, node}
        self.node_lines: dict[str, int] = {}
        top = [d for d in order if self.nodes[d]["parent"] is None]
        blocks = self.structure(top)
        nodes = self.emit(blocks, (), ())
        self.wire(nodes)
        self.features(nodes, features)
        return nodes, self.node_lines

    # ---- structure: branches from sourceHandle -------------------------------------------------
    def handles(self, did: str) -> list[tuple[str, str]] | None:
        """The arms (handle, name) of a branching node, or None for a plain node."""
        rec = self.nodes[did]
        d, typ = rec["data"], rec["type"]
        out_handles = [h for _, h in self.succs[did]]
        arms: list[tuple[str, str]] = []
        if typ == "if-else":
            cases = d.get("cases")
            if isinstance(cases, list) and cases:
                for c in cases:
                    if isinstance(c, dict):
                        cid = str(c.get("case_id") or c.get("id") or "")
                        if cid:
                            arms.append((cid, cid))
            else:  # 0.1.0: top-level conditions, one case
                arms.append(("true", "true"))
            arms.append(("false", "else"))
        elif typ == "question-classifier":
            for c in d.get("classes") or []:
                if isinstance(c, dict) and c.get("id") not in (None, ""):
                    arms.append((str(c["id"]), fix_surrogates(str(c.get("name") or c["id"]))))
        elif "fail-branch" in out_handles:
            arms = [("success-branch", "success"), ("fail-branch", "fail")]
        else:
            return None
        known = {h for h, _ in arms}
        if not arms and not out_handles:
            return None
        for h in out_handles:
            if h not in known and not (h in ("source", "success-branch") and
                                       "success-branch" in known):
                arms.append((h, h))
                known.add(h)
        return arms

    def _arm_handle(self, did: str, h: str) -> str:
        if h == "source" and self.nodes[did]["type"] not in ("if-else", "question-classifier"):
            return "success-branch"
        return h

    def structure(self, scope: list[str]) -> list[_Block]:
        sset = set(scope)
        order = self.topo(scope)
        absorbed: set[str] = set()
        blocks = []
        for b in order:
            if b in absorbed:
                continue
            arms_h = self.handles(b)
            if arms_h is None:
                blocks.append(_Block(b))
                continue
            desc = self.descendants(b, sset)
            arms = []
            for h, name in arms_h:
                arm: set[str] = set()
                changed = True
                while changed:
                    changed = False
                    for n in order:
                        if n in arm or n in absorbed or n not in desc or n == b:
                            continue
                        ok, linked = True, False
                        for p, ph in self.preds[n]:
                            if p == b:
                                if self._arm_handle(b, ph) == h:
                                    linked = True
                                else:
                                    ok = False
                            elif p in arm:
                                linked = True
                            elif p in desc and p in sset:
                                ok = False
                        if ok and linked:
                            arm.add(n)
                            changed = True
                absorbed |= arm
                arms.append((h, name, [n for n in order if n in arm]))
            n_arms = len(arms)
            if self.nodes[b]["type"] not in ("if-else", "question-classifier") and n_arms == 2:
                probs = [1 - FAIL_PROBABILITY, FAIL_PROBABILITY]
                self.note(self.nid_of(b), f"fail-branch probability {FAIL_PROBABILITY} (default)")
            else:
                probs = [1.0 / n_arms] * n_arms
                probs[-1] = 1.0 - sum(probs[:-1])
                self.note(self.nid_of(b), f"{n_arms} arms, probability {1 / n_arms:.3g} each "
                                          "(default: equal)")
            blocks.append(_Block(b, [(h, name, pr, self.structure(members))
                                     for (h, name, members), pr in zip(arms, probs)]))
        return blocks

    def nid_of(self, did: str) -> str:
        return did if ID_RE.match(did) else "n" + re.sub(r"[^A-Za-z0-9_\-]", "_", did)

    def topo(self, scope: list[str]) -> list[str]:
        sset = set(scope)
        indeg = {n: 0 for n in scope}
        for n in scope:
            for p, _ in self.preds[n]:
                if p in sset and p != n:
                    indeg[n] += 1
        ready = sorted([n for n in scope if indeg[n] == 0], key=self.order.get)
        out = []
        while ready:
            n = ready.pop(0)
            out.append(n)
            for t, _ in self.succs[n]:
                if t in sset and t != n:
                    indeg[t] -= 1
                    if indeg[t] == 0:
                        ready.append(t)
                        ready.sort(key=self.order.get)
        if len(out) < len(scope):  # a cycle: the loader names it after conversion
            out += sorted([n for n in scope if n not in out], key=self.order.get)
        return out

    def descendants(self, b: str, sset: set[str]) -> set[str]:
        seen, stack = set(), [b]
        while stack:
            n = stack.pop()
            for t, _ in self.succs[n]:
                if t in sset and t not in seen:
                    seen.add(t)
                    stack.append(t)
        return seen

    # ---- emission ------------------------------------------------------------------------------

    def refs_in(self, did: str) -> list[str]:
        """Dify node ids a node's data refers to (selectors and {{#id.var#}} in text)."""
        found: list[str] = []

        def add(x):
            x = str(x)
            if x == "sys":
                x = "__start__"
            if (x in self.nodes or x == "__start__") and x not in found:
                found.append(x)

        def rec(v, depth=0):
            if depth > 40:
                return
            if isinstance(v, str):
                for m in _REF_RE.finditer(v):
                    add(m.group(1).split(".")[0])
            elif isinstance(v, list):
                if len(v) >= 2 and isinstance(v[0], (str, int)) and isinstance(v[1], str) and (
                        str(v[0]) in self.nodes or v[0] == "sys") and all(
                        isinstance(x, (str, int)) for x in v):
                    add(v[0])
                else:
                    for x in v:
                        rec(x, depth + 1)
            elif isinstance(v, dict):
                for k, x in v.items():
                    if k not in ("desc", "title", "selected", "type"):
                        rec(x, depth + 1)
        rec(self.nodes[did]["data"])
        return found

    def lookup(self, table: dict, did: str, copy: tuple):
        for i in range(len(copy), -1, -1):
            if (did, copy[:i]) in table:
                return table[(did, copy[:i])]
        return None

    def visible(self, x: str, target: str) -> str | None:
        """What node x may name to depend on `target`: target, its container, or None (a sibling arm
        or x's own container)."""
        cx, ct = self.info[x]["chain"], self.info[target]["chain"]
        k = 0
        while k < min(len(cx), len(ct)) and cx[k] == ct[k]:
            k += 1
        if k == len(ct):
            ref = target
        else:
            cont = ct[k][0]
            if k < len(cx) and cx[k][0] == cont:
                return None  # a sibling arm of the same branch
            ref = cont
        if ref == x or any(c[0] == ref for c in cx):
            return None
        return ref

    def wire(self, nodes: list[dict]):
        start = [d for d in self.nodes if self.nodes[d]["type"] == "start"]
        self.start_did = start[0] if start else None
        outputs = {nid for nid, inf in self.info.items() if inf["node"]["kind"] == "output"}
        control: dict[str, list[str]] = {}
        for nid, inf in self.info.items():
            ins = list(inf["fixed"])
            if inf["role"] == "main":
                did, copy = inf["did"], inf["copy"]
                for p, h in self.preds[did]:
                    if self.handles(p) is not None:
                        t = self.lookup(self.branch_of, p, copy)
                    else:
                        t = self.lookup(self.exit, p, copy)
                    if t is not None:
                        ins.append(t)
            control[nid] = ins  # "branch" and "exit" roles: only their fixed inputs
        # resolve visibility (a reference into a container names the container)
        for nid, inf in self.info.items():
            out = []
            for t in control[nid]:
                r = self.visible(nid, t) if t in self.info else None
                if r is not None and r not in out:
                    out.append(r)
            node = inf["node"]
            if out:
                node["inputs"] = out
            elif "inputs" in node and not node["inputs"]:
                del node["inputs"]
        # data references that add a dependency
        for nid, inf in list(self.info.items()):
            if inf["role"] != "main":
                continue
            for r in self.refs_in(inf["did"]):
                if r == "__start__":
                    if self.start_did is None:
                        continue
                    r = self.start_did
                t = self.lookup(self.exit, r, inf["copy"])
                if t is None or t not in self.info:
                    continue
                v = self.visible(nid, t)
                if v is None or v in outputs:
                    continue
                self.add_data_edge(nid, v)
        # an output in mid-flow is transparent: what follows it consumes what it consumed
        done: dict[str, list[str]] = {}

        def through(nid, stack=()):
            if nid in done:
                return done[nid]
            out = []
            for t in self.info[nid]["node"].get("inputs", []):
                if t in outputs and t not in stack:
                    for u in through(t, stack + (nid,)):
                        u2 = self.visible(nid, u)
                        if u2 is not None and u2 not in out:
                            out.append(u2)
                elif t not in outputs and t not in out:
                    out.append(t)
            done[nid] = out
            return out
        for nid, inf in self.info.items():
            node = inf["node"]
            if any(t in outputs for t in node.get("inputs", [])):
                new = through(nid)
                if new:
                    node["inputs"] = new
                else:
                    del node["inputs"]
        # order each scope topologically (stable)
        self.sort_scope(nodes)

    def scope_anchor(self, x: str, t: str) -> str:
        """The node standing for x in t's scope (x itself or x's container there)."""
        ct = self.info[t]["chain"]
        cx = self.info[x]["chain"]
        if len(cx) > len(ct):
            return cx[len(ct)][0]
        return x

    def ancestors(self, x: str) -> set[str]:
        seen, stack = set(), [x]
        while stack:
            n = stack.pop()
            for i in self.info[n]["node"].get("inputs", []):
                if i not in seen and i in self.info:
                    seen.add(i)
                    stack.append(i)
            # a node without inputs inside a container consumes the container's inputs
            ch = self.info[n]["chain"]
            if ch and not self.info[n]["node"].get("inputs"):
                c = ch[-1][0]
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        return seen

    def add_data_edge(self, x: str, t: str):
        anchor = self.scope_anchor(x, t)
        if t == anchor:
            return
        if t in self.ancestors(x) or t in self.ancestors(anchor):
            return  # already a dependency
        if anchor in self.ancestors(t) or x in self.ancestors(t):
            return  # would make a cycle
        self.info[x]["node"].setdefault("inputs", []).append(t)

    def sort_scope(self, nodes: list[dict]):
        ids = {n["id"] for n in nodes}
        pos = {n["id"]: i for i, n in enumerate(nodes)}
        indeg = {n["id"]: sum(1 for i in n.get("inputs", []) if i in ids) for n in nodes}
        by_id = {n["id"]: n for n in nodes}
        ready = sorted([i for i in ids if indeg[i] == 0], key=pos.get)
        out = []
        while ready:
            i = ready.pop(0)
            out.append(by_id[i])
            for n in nodes:
                if i in n.get("inputs", []):
                    indeg[n["id"]] -= n["inputs"].count(i)
                    if indeg[n["id"]] == 0:
                        ready.append(n["id"])
                        ready.sort(key=pos.get)
        if len(out) == len(nodes):
            nodes[:] = out
        for n in nodes:
            if n["kind"] == "loop":
                self.sort_scope(n["body"])
            elif n["kind"] == "branch":
                for a in n["arms"]:
                    self.sort_scope(a["nodes"])
