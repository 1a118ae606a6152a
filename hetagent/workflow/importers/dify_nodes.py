"""Native nodes for each Dify node type (dify.py's docstring has the mapping), the speech features,
and chat / agent-chat / completion apps that have no graph.

A mixin of dify._Converter, which holds the state these methods share."""
from __future__ import annotations

import math
import re

from hetagent.workflow.importers.common import fix_surrogates, number, symbol
from hetagent.workflow.importers.dify_defaults import (
    QUERY_TOKENS, CONTEXT_TOKENS, HISTORY_TOKENS_PER_TURN, MEMORY_TURNS, IMAGE_TOKENS,
    CLASSIFIER_OUTPUT_TOKENS, ITERATION_ITEMS, ITERATION_MAX, PARALLEL_NUMS, LOOP_MAX, AGENT_MAX,
    AGENT_CHAT_MAX, AGENT_EXPECTED, TOOL_LATENCY_MS, WORKFLOW_TOOL_LATENCY_MS, HTTP_LATENCY_MS,
    INDEX_SIZE, TOP_K, FILE_BYTES, CPU_MS, CPU_MS_OTHER, CPU_MS_UNKNOWN, STT_MODEL, _CONTAINERS,
    _CPU_TYPES)
from hetagent.workflow.importers.dify_graph import _Block
from hetagent.workflow.importers.hosted import provider_short
from hetagent.workflow.model import MAX_SOURCE_CHARS


class NodeMixin:
    def emit(self, blocks: list[_Block], chain: tuple, copy: tuple) -> list[dict]:
        out = []
        for blk in blocks:
            did = blk.did
            rec = self.nodes[did]
            if blk.arms is None:
                out += self.emit_node(did, chain, copy)
                continue
            if rec["type"] == "if-else":
                bid = self.new_id(self.nid_of(did) + self.sfx(copy))
                self.entry[(did, copy)] = bid
                self.exit[(did, copy)] = bid
                self.pending(bid, did, copy, chain, role="main")
            else:
                out += self.emit_node(did, chain, copy)
                bid = self.new_id(self.nid_of(did) + self.sfx(copy) + "_branch")
                self.info[bid] = {"chain": chain, "did": did, "copy": copy, "role": "branch",
                                  "fixed": [self.exit[(did, copy)]]}
                self.node_lines[bid] = self.line(rec["path"] + ("id",))
            self.branch_of[(did, copy)] = bid
            arms = []
            for a, (h, name, prob, sub) in enumerate(blk.arms):
                arms.append({"name": str(name), "probability": prob,
                             "nodes": self.emit(sub, chain + ((bid, a),), copy)})
            node = {"id": bid, "kind": "branch", "description": self.describe(did), "arms": arms}
            self.info[bid]["node"] = node
            out.append(node)
        return out

    @staticmethod
    def sfx(copy: tuple) -> str:
        return "".join(f"_p{k}" for k in copy)

    def describe(self, did: str) -> str:
        rec = self.nodes[did]
        t = f" '{rec['title']}'" if rec["title"] else ""
        return f"Dify {rec['type']} node {did}{t}"

    def pending(self, nid: str, did: str, copy: tuple, chain: tuple, role: str, fixed=None):
        self.info[nid] = {"chain": chain, "did": did, "copy": copy, "role": role,
                          "fixed": list(fixed or [])}
        self.node_lines[nid] = self.line(self.nodes[did]["path"] + ("id",))

    def emit_node(self, did: str, chain: tuple, copy: tuple) -> list[dict]:
        rec = self.nodes[did]
        d, typ, title = rec["data"], rec["type"], rec["title"]
        base = self.nid_of(did) + self.sfx(copy)
        nid = self.new_id(base)
        label = f"'{did}' ({title})" if title else f"'{did}'"
        desc = self.describe(did)
        nodes: list[dict] = []
        first = nid
        if typ == "start" or typ.startswith("trigger"):
            node = {"id": nid, "kind": "input", "description": desc, **self.start_payload(nid, d)}
        elif typ in ("end", "answer"):
            node = {"id": nid, "kind": "output", "description": desc}
        elif typ in ("llm", "parameter-extractor", "question-classifier"):
            node = {"id": nid, "kind": "llm", "description": desc, **self.llm_fields(nid, d, typ)}
        elif typ == "agent":
            node = self.agent_loop(nid, d, desc, label, chain)
        elif typ in ("knowledge-retrieval", "knowledge-retrieval-v2"):
            nodes, node = self.retrieval(nid, d, desc, label)
            if nodes:
                first = nodes[0]["id"]
        elif typ in ("tool", "http-request"):
            node = {"id": nid, "kind": "tool", "description": desc, **self.tool_fields(nid, d, typ)}
        elif typ in _CPU_TYPES:
            ms = CPU_MS.get(typ, CPU_MS_OTHER)
            self.note(nid, f"cpu_ms {ms:g} (default for {typ})")
            node = {"id": nid, "kind": "code", "description": desc, "cpu_ms": ms}
            if typ == "code" and d.get("code_language") == "python3" and isinstance(d.get("code"), str):
                from hetagent.workflow.loader import code_source_problem
                problem = code_source_problem(d["code"]) if len(d["code"]) <= MAX_SOURCE_CHARS \
                    else f"longer than {MAX_SOURCE_CHARS} characters"
                if problem is None:
                    node.update(language="python3", source=d["code"])   # run for real, sandboxed
                else:
                    self.note(nid, f"python3 code not carried over ({problem}): a stand-in runs")
        elif typ in _CONTAINERS:
            node = self.container(nid, did, d, desc, chain, copy)
        elif typ in ("if-else",):  # an if-else always becomes a branch; never reached
            node = {"id": nid, "kind": "code", "description": desc, "cpu_ms": CPU_MS_OTHER}
        else:
            self.warn(f"Dify node {label}: node type '{typ}' is unknown to hetagent; imported as "
                      f"generic CPU work ({CPU_MS_UNKNOWN:g} ms)")
            self.note(nid, f"unknown type '{typ}': code, cpu_ms {CPU_MS_UNKNOWN:g}")
            node = {"id": nid, "kind": "code", "description": desc + " (unknown type: CPU work)",
                    "cpu_ms": CPU_MS_UNKNOWN}
        for n in nodes:
            self.pending(n["id"], did, copy, chain, role="aux", fixed=n.pop("_fixed", []))
            self.info[n["id"]]["node"] = n
        self.pending(nid, did, copy, chain, role="main" if first == nid else "exit",
                     fixed=node.pop("_fixed", []))
        self.info[nid]["node"] = node
        if first != nid:
            self.info[first]["role"] = "main"
        self.entry[(did, copy)] = first
        self.exit[(did, copy)] = nid
        return nodes + [node]

    def start_payload(self, nid: str, d: dict) -> dict:
        text, nbytes = 0, 0
        for v in d.get("variables") or []:
            if not isinstance(v, dict):
                continue
            t = str(v.get("type") or "text-input")
            if t in ("file", "file-list"):
                nbytes += FILE_BYTES
            elif t == "paragraph":
                text += 256
            elif t in ("number", "select", "checkbox"):
                text += 4
            else:
                text += 64
        if self.mode == "advanced-chat" or not text and not nbytes:
            text += QUERY_TOKENS
        self.note(nid, f"input text_tokens {text}, bytes {nbytes} (defaults per variable)")
        out = {"text_tokens": text}
        if nbytes:
            out["bytes"] = nbytes
        return out

    def llm_fields(self, nid: str, d: dict, typ: str) -> dict:
        model = d.get("model") if isinstance(d.get("model"), dict) else {}
        texts: list = []
        extra, why = 0, []
        if typ == "llm":
            pt = d.get("prompt_template")
            if isinstance(pt, dict):
                pt = [pt]
            for m in pt or []:
                if isinstance(m, dict):
                    texts.append(m.get("jinja2_text") if m.get("edition_type") == "jinja2"
                                 else m.get("text"))
            ctx = d.get("context")
            if isinstance(ctx, dict) and ctx.get("enabled") and not any(
                    isinstance(t, str) and "{{#context#}}" in t for t in texts):
                extra += CONTEXT_TOKENS
                why.append(f"{CONTEXT_TOKENS} of context")
            vision = d.get("vision")
            if isinstance(vision, dict) and vision.get("enabled"):
                extra += IMAGE_TOKENS
                why.append(f"{IMAGE_TOKENS} for an image")
            out_tokens = self.output_tokens(nid, model)
        elif typ == "parameter-extractor":
            texts.append(d.get("instruction"))
            params = d.get("parameters") or []
            texts += [str(p) for p in params]
            extra += QUERY_TOKENS + 300
            why.append("300 of extraction instructions")
            out_tokens = 32 + 32 * len(params)
            self.note(nid, f"output_tokens {out_tokens} (32 + 32 per parameter)")
        else:  # question-classifier
            texts.append(d.get("instruction") or d.get("instructions"))
            texts += [str(c.get("name")) for c in d.get("classes") or [] if isinstance(c, dict)]
            extra += QUERY_TOKENS + 400
            why.append("400 of classification instructions")
            out_tokens = CLASSIFIER_OUTPUT_TOKENS
            self.note(nid, f"output_tokens {out_tokens} (classifier default)")
        mem = d.get("memory")
        if isinstance(mem, dict):
            win = mem.get("window") if isinstance(mem.get("window"), dict) else {}
            turns = int(number(win.get("size"), MEMORY_TURNS)) if win.get("enabled") else MEMORY_TURNS
            extra += turns * HISTORY_TOKENS_PER_TURN
            why.append(f"{turns} turns of memory")
            texts.append(mem.get("query_prompt_template"))
        fields = self.llm_model(nid, model, self.describe_short(d, nid))
        fields["prompt_tokens"] = self.prompt_tokens(nid, texts, extra, ", ".join(why))
        fields["output_tokens"] = out_tokens
        return fields

    @staticmethod
    def describe_short(d: dict, nid: str) -> str:
        t = d.get("title")
        return f"'{nid}' ({fix_surrogates(str(t))})" if t else f"'{nid}'"

    def tool_fields(self, nid: str, d: dict, typ: str) -> dict:
        if typ == "http-request":
            method = str(d.get("method") or "get").upper()
            url = str(d.get("url") or "")
            host = re.sub(r"^[a-z]+://", "", url).split("/")[0] or "http"
            self.note(nid, f"latency_ms {HTTP_LATENCY_MS:g} (http-request default)")
            body = d.get("body") if isinstance(d.get("body"), dict) else {}
            req = 1024 if str(body.get("type") or "none") != "none" else 256
            return {"tool": f"http {method} {host}"[:80], "latency_ms": HTTP_LATENCY_MS,
                    "request_bytes": req}
        ptype = str(d.get("provider_type") or "builtin")
        prov = str(d.get("provider_name") or d.get("provider_id") or "tool")
        tname = str(d.get("tool_name") or d.get("tool_label") or "tool")
        lat = WORKFLOW_TOOL_LATENCY_MS if ptype == "workflow" else TOOL_LATENCY_MS
        self.note(nid, f"latency_ms {lat:g} ({ptype} tool default)")
        return {"tool": f"{provider_short(prov)}/{tname}"[:80], "latency_ms": lat}

    def agent_tools(self, tools) -> list[str]:
        names = []
        for t in tools or []:
            if not isinstance(t, dict) or t.get("enabled") is False:
                continue
            prov = provider_short(str(t.get("provider_name") or t.get("provider_id") or "tool"))
            names.append(f"{prov}/{t.get('tool_name') or t.get('tool_label') or 'tool'}"[:80])
        return names

    def agent_body(self, nid: str, model: dict, texts: list, tools: list[str], title: str) -> list:
        llm_id = self.new_id(f"{nid}_llm")
        fields = self.llm_model(llm_id, model, title)
        extra = 300 + 150 * len(tools)
        body = [{"id": llm_id, "kind": "llm", "description": "agent step: decide, call a tool or answer",
                 **fields,
                 "prompt_tokens": self.prompt_tokens(llm_id, texts, extra,
                                                     "300 of agent instructions, 150 per tool schema"),
                 "output_tokens": self.output_tokens(llm_id, model, 256)}]
        tool_nodes = []
        for tname in tools:
            tid = self.new_id(f"{nid}_{symbol(tname.split('/')[-1]) or 'tool'}")
            self.note(tid, f"latency_ms {TOOL_LATENCY_MS:g} (agent tool default)")
            tool_nodes.append({"id": tid, "kind": "tool", "description": f"agent tool {tname}",
                               "tool": tname, "latency_ms": TOOL_LATENCY_MS})
        if len(tool_nodes) == 1:
            tool_nodes[0]["inputs"] = [llm_id]
            body += tool_nodes
        elif tool_nodes:
            bid = self.new_id(f"{nid}_tools")
            k = len(tool_nodes)
            probs = [1.0 / k] * k
            probs[-1] = 1.0 - sum(probs[:-1])
            self.note(bid, f"{k} tools, probability {1 / k:.3g} each (default: equal)")
            body.append({"id": bid, "kind": "branch", "description": "the tool the agent calls",
                         "inputs": [llm_id],
                         "arms": [{"name": t["tool"], "probability": p, "nodes": [t]}
                                  for t, p in zip(tool_nodes, probs)]})
        return body

    def agent_loop(self, nid: str, d: dict, desc: str, label: str, chain: tuple) -> dict:
        params = d.get("agent_parameters") if isinstance(d.get("agent_parameters"), dict) else {}
        mp = params.get("model")
        model = mp.get("value") if isinstance(mp, dict) and isinstance(mp.get("value"), dict) else (
            mp if isinstance(mp, dict) else {})
        if not model and isinstance(d.get("model"), dict):
            model = d["model"]
        tools_p = params.get("tools")
        tools = self.agent_tools(tools_p.get("value") if isinstance(tools_p, dict) else tools_p)
        mcp = params.get("mcp_server") or params.get("mcp_servers_config")
        if mcp and not tools:
            tools = ["mcp/server"]
        texts = []
        for k in ("instruction", "query", "system_prompt"):
            v = params.get(k)
            texts.append(v.get("value") if isinstance(v, dict) else v)
        mx = int(number(params.get("maximum_iterations") or params.get("max_iterations"), 0))
        if mx < 1:
            mx = AGENT_MAX
            self.note(nid, f"max_iterations {mx} (agent default)")
        exp = min(AGENT_EXPECTED, mx)
        self.note(nid, f"expected_iterations {exp} (default)")
        body = self.agent_body(nid, model, texts, tools, label)
        return {"id": nid, "kind": "loop", "description": desc + " (agent loop)",
                "expected_iterations": exp, "max_iterations": mx, "body": body}

    def retrieval(self, nid: str, d: dict, desc: str, label: str):
        datasets = d.get("dataset_ids") or []
        n_ds = max(1, len(datasets)) if isinstance(datasets, list) else 1
        mode = str(d.get("retrieval_mode") or "multiple")
        mrc = d.get("multiple_retrieval_config") if isinstance(d.get("multiple_retrieval_config"),
                                                               dict) else {}
        top_k = number(d.get("top_n") or d.get("top_k") or mrc.get("top_k"), None)
        if top_k is None:
            top_k = TOP_K
            self.note(nid, f"top_k {TOP_K} (default)")
        top_k = max(1, int(top_k))
        if "reranking_enable" in mrc:
            rerank = bool(mrc.get("reranking_enable")) and mrc.get("reranking_mode") != "weighted_score"
        elif "reranking_enable" in d:
            rerank = bool(d.get("reranking_enable"))
        else:
            rm = mrc.get("reranking_model")
            rerank = mode != "single" and isinstance(rm, dict) and bool(rm.get("model"))
        size = INDEX_SIZE * n_ds
        self.note(nid, f"index_size {size} ({INDEX_SIZE} vectors per dataset, default)")
        node = {"id": nid, "kind": "memory_search", "description": desc, "index_size": size,
                "top_k": top_k, "rerank": rerank}
        pre = []
        src = d.get("single_retrieval_config")
        if mode == "single" and n_ds > 1 and isinstance(src, dict):
            rid = self.new_id(f"{nid}_router")
            fields = self.llm_model(rid, src.get("model"), label)
            pre.append({"id": rid, "kind": "llm", "description": "retrieval router: picks a dataset",
                        **fields, "prompt_tokens": 256 + 64 * n_ds, "output_tokens": 32})
            self.note(rid, f"prompt_tokens {256 + 64 * n_ds}, output_tokens 32 (router default)")
            node["_fixed"] = [rid]
        return pre, node

    def container(self, nid: str, did: str, d: dict, desc: str, chain: tuple, copy: tuple) -> dict:
        typ = self.nodes[did]["type"]
        children = [c for c in self.nodes if self.nodes[c]["parent"] == did]
        children.sort(key=self.order.get)
        inner = chain + ((nid, 0),)
        if typ == "loop":
            mx = int(number(d.get("loop_count"), 0))
            if mx < 1:
                mx = LOOP_MAX
                self.note(nid, f"max_iterations {mx} (loop default)")
            brk = d.get("break_conditions")
            exp = float(mx) if not brk else (1 + mx) / 2
            if brk:
                self.note(nid, f"expected_iterations {exp:g} ((1 + loop_count) / 2, default)")
            rounds_exp, rounds_max, copies = exp, mx, 1
        else:
            self.note(nid, f"expected_iterations {ITERATION_ITEMS}, max_iterations {ITERATION_MAX} "
                           f"(iteration items, default)")
            copies = 1
            if d.get("is_parallel"):
                par = int(number(d.get("parallel_nums"), PARALLEL_NUMS)) or PARALLEL_NUMS
                copies = max(1, min(par, ITERATION_ITEMS))
                self.note(nid, f"parallel: {copies} copies of the body per round")
            rounds_exp = math.ceil(ITERATION_ITEMS / copies)
            rounds_max = math.ceil(ITERATION_MAX / copies)
        body: list[dict] = []
        if children:
            blocks = self.structure(children)
            for k in range(copies):
                body += self.emit(blocks, inner, copy + ((k,) if copies > 1 else ()))
        if not body:
            eid = self.new_id(f"{nid}_body")
            body = [{"id": eid, "kind": "code", "description": "empty loop body", "cpu_ms": CPU_MS_OTHER}]
            self.info[eid] = {"chain": inner, "did": did, "copy": copy, "role": "aux", "fixed": [],
                              "node": body[0]}
            self.node_lines[eid] = self.line(self.nodes[did]["path"] + ("id",))
        return {"id": nid, "kind": "loop", "description": desc + (" (parallel)" if copies > 1 else ""),
                "expected_iterations": float(rounds_exp), "max_iterations": int(rounds_max),
                "body": body}

    # ---- inputs --------------------------------------------------------------------------------

    # ---- features: speech-to-text and text-to-speech -----------------------------------------
    def features(self, nodes: list[dict], features: dict):
        def on(key):
            f = features.get(key)
            return isinstance(f, dict) and bool(f.get("enabled"))
        inputs = [n for n in nodes if n["kind"] == "input"]
        if on("speech_to_text") and inputs:
            src = inputs[0]
            sid = self.new_id("speech_to_text")
            src["audio_seconds"] = 5
            self.note(src["id"], "audio_seconds 5 (speech-to-text on, default)")
            stt = {"id": sid, "kind": "speech_to_text", "model": STT_MODEL,
                   "description": "Dify feature speech_to_text", "inputs": [src["id"]]}
            self.note(sid, f"model {STT_MODEL} (Dify's hosted speech-to-text, run locally)")

            def redirect(ns):
                for n in ns:
                    if n is not stt and src["id"] in n.get("inputs", []):
                        n["inputs"] = [sid if i == src["id"] else i for i in n["inputs"]]
                    if n["kind"] == "loop":
                        redirect(n["body"])
                    elif n["kind"] == "branch":
                        for a in n["arms"]:
                            redirect(a["nodes"])
            redirect(nodes)
            nodes.insert(nodes.index(src) + 1, stt)
            self.node_lines[sid] = self.line(("workflow", "features", "speech_to_text"))
        if on("text_to_speech"):
            def add_tts(ns):
                for n in list(ns):
                    if n["kind"] == "output":
                        tid = self.new_id(f"{n['id']}_tts")
                        tts = {"id": tid, "kind": "text_to_speech",
                               "description": "Dify feature text_to_speech"}
                        if n.get("inputs"):
                            tts["inputs"] = n["inputs"]
                        n["inputs"] = [tid]
                        ns.insert(ns.index(n), tts)
                        self.node_lines[tid] = self.line(("workflow", "features", "text_to_speech"))
                    elif n["kind"] == "loop":
                        add_tts(n["body"])
                    elif n["kind"] == "branch":
                        for a in n["arms"]:
                            add_tts(a["nodes"])
            add_tts(nodes)

    # ---- chat, agent-chat and completion apps (no graph) ------------------------------------------
    def app_without_graph(self, mc: dict, path: tuple):
        ln = self.line(path)
        node_lines: dict[str, int] = {}
        nodes: list[dict] = []

        def add(n):
            self.native_ids.add(n["id"])
            nodes.append(n)
            node_lines[n["id"]] = ln
            return n["id"]
        text = QUERY_TOKENS if self.mode != "completion" else 0
        nbytes = 0
        for item in mc.get("user_input_form") or []:
            if isinstance(item, dict):
                for t, v in item.items():
                    if t in ("file", "file-list"):
                        nbytes += FILE_BYTES
                    else:
                        text += 256 if t == "paragraph" else 4 if t in ("number", "select") else 64
        text = text or QUERY_TOKENS
        self.note("start", f"input text_tokens {text} (defaults per variable)")
        inp = {"id": "start", "kind": "input", "description": f"Dify {self.mode or 'chat'} app input",
               "text_tokens": text}
        if nbytes:
            inp["bytes"] = nbytes
        prev = add(inp)

        def on(key):
            f = mc.get(key)
            return isinstance(f, dict) and bool(f.get("enabled"))
        if on("speech_to_text"):
            inp["audio_seconds"] = 5
            prev = add({"id": "speech_to_text", "kind": "speech_to_text", "model": STT_MODEL,
                        "inputs": [prev], "description": "Dify feature speech_to_text"})
        ds = mc.get("dataset_configs") if isinstance(mc.get("dataset_configs"), dict) else {}
        dsets = ds.get("datasets")
        dsets = dsets.get("datasets") if isinstance(dsets, dict) else dsets
        n_ds = len([x for x in dsets or [] if isinstance(x, dict) and
                    (x.get("dataset") or {}).get("enabled", True) is not False])
        context = 0
        if n_ds:
            top_k = int(number(ds.get("top_k"), TOP_K) or TOP_K)
            rerank = bool(ds.get("reranking_enabled") or (ds.get("reranking_model") or {}).get(
                "reranking_model_name")) and ds.get("retrieval_model") != "single"
            self.note("retrieval", f"index_size {INDEX_SIZE * n_ds} ({INDEX_SIZE} per dataset)")
            prev = add({"id": "retrieval", "kind": "memory_search", "inputs": [prev],
                        "description": "Dify dataset_configs: retrieval", "top_k": top_k,
                        "index_size": INDEX_SIZE * n_ds, "rerank": rerank})
            context = CONTEXT_TOKENS
        model = mc.get("model") if isinstance(mc.get("model"), dict) else {}
        texts = [mc.get("pre_prompt")]
        cpc = mc.get("chat_prompt_config")
        if isinstance(cpc, dict):
            texts += [m.get("text") for m in cpc.get("prompt") or [] if isinstance(m, dict)]
        cpc = mc.get("completion_prompt_config")
        if isinstance(cpc, dict) and isinstance(cpc.get("prompt"), dict):
            texts.append(cpc["prompt"].get("text"))
        am = mc.get("agent_mode") if isinstance(mc.get("agent_mode"), dict) else {}
        history = MEMORY_TURNS * HISTORY_TOKENS_PER_TURN if self.mode != "completion" else 0
        if self.mode == "agent-chat" or am.get("enabled"):
            tools = self.agent_tools(am.get("tools"))
            mx = int(number(am.get("max_iteration"), 0))
            if mx < 1:
                mx = AGENT_CHAT_MAX
                self.note("agent", f"max_iterations {mx} (agent-chat default)")
            exp = min(AGENT_EXPECTED, mx)
            self.note("agent", f"expected_iterations {exp} (default)")
            self.native_ids.add("agent")
            body = self.agent_body("agent", model, texts, tools, "agent")
            body[0]["prompt_tokens"] += context + history
            prev = add({"id": "agent", "kind": "loop", "inputs": [prev],
                        "description": f"Dify agent-chat ({am.get('strategy') or 'function_call'})",
                        "expected_iterations": exp, "max_iterations": mx, "body": body})
            for n in body:
                node_lines[n["id"]] = ln
                if n["kind"] == "branch":
                    for a in n["arms"]:
                        for t in a["nodes"]:
                            node_lines[t["id"]] = ln
        else:
            self.native_ids.add("llm")
            fields = self.llm_model("llm", model, "'llm'")
            why = f"{context} of context, {history} of history" if context or history else ""
            prev = add({"id": "llm", "kind": "llm", "inputs": [prev],
                        "description": f"Dify {self.mode or 'chat'} app model", **fields,
                        "prompt_tokens": self.prompt_tokens("llm", texts + ["{{#sys.query#}}"],
                                                            context + history, why),
                        "output_tokens": self.output_tokens("llm", model)})
        if on("text_to_speech"):
            prev = add({"id": "text_to_speech", "kind": "text_to_speech", "inputs": [prev],
                        "description": "Dify feature text_to_speech"})
        add({"id": "answer", "kind": "output", "inputs": [prev], "description": "the app's answer"})
        return nodes, node_lines
