"""The runtime on an embedded Ray: light workflows (loopback tool, sandboxed code, an LLM bound to a
fake OpenAI-compatible server), so no model loads. Every request is counted: lost is always 0."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")

LIGHT = """
name: light
sla: {latency_ms: 5000, percentile: 95}
rate: 5
nodes:
  - {id: q, kind: input, text_tokens: 16}
  - {id: search, kind: tool, tool: loopback_search, latency_ms: 5, inputs: [q]}
  - {id: glue, kind: code, cpu_ms: 1, inputs: [search, q]}
  - {id: out, kind: output, inputs: [glue]}
"""
CHAT = """
name: chat
sla: {latency_ms: 5000, percentile: 95}
rate: 2
nodes:
  - {id: q, kind: input, text_tokens: 16}
  - {id: answer, kind: llm, model: gemma-3-270m, prompt_tokens: 64, output_tokens: 8, inputs: [q]}
  - {id: out, kind: output, inputs: [answer]}
"""


@pytest.fixture(scope="module")
def ray_local():
    from hetagent.runtime.deploy import ray_init
    if ray.is_initialized():
        ray.shutdown()
    ray_init(None, {"local-cpu": 1, "h100": 1})
    yield
    ray.shutdown()


def _plan(tmp_path_factory, text, name):
    from hetagent import api
    f = tmp_path_factory.mktemp(name) / f"{name}.yaml"
    f.write_text(text)
    return api.plan(str(f), fleet="local-cpu").to_json()


@pytest.fixture(scope="module")
def light(tmp_path_factory):
    return _plan(tmp_path_factory, LIGHT, "light")


@pytest.fixture(scope="module")
def rt(ray_local, light):
    from hetagent.runtime.commands import deploy
    r = deploy(light)
    yield r
    r.close()
    r.d.shutdown()


def _counted(s, n):
    assert s["requests"] == n
    assert s["completed"] + s["failed"] + s["refused"] == n
    assert s["lost"] == 0


def test_run_closed_and_open_loop(rt):
    from hetagent.runtime.commands import drive
    s = drive(rt, requests=12, concurrency=3)
    _counted(s, 12)
    assert s["completed"] == 12 and s["emulated"] == []
    assert set(s["per_stage_ms"]) == {"search.lookup", "search.compute", "glue"}
    assert s["sla_attainment"] == 1.0 and s["latency_ms"]["p50"] > 0
    s = drive(rt, requests=24, rate=40)
    _counted(s, 36)


def test_killed_actor_is_restarted_and_request_retried(rt):
    from hetagent.runtime.load import request_input
    pool = rt.d.pools[rt.d.op_pool["glue"]]
    payload = request_input(rt.d.graph, "retry me")
    before = len(rt.metrics.records)
    futs = [rt.submit(payload) for _ in range(6)]
    time.sleep(0.05)
    ray.kill(pool.actors[0], no_restart=False)          # mid-request: Ray restarts it
    futs += [rt.submit(payload) for _ in range(4)]
    res = [f.result(timeout=120) for f in futs]
    assert [r.status for r in res] == ["completed"] * 10
    recs = list(rt.metrics.records.values())[before:]
    assert sum(r.retries for r in recs) >= 1


def test_admission_refuses_beyond_capacity(rt):
    old = rt.max_inflight
    rt.max_inflight = 2
    try:
        from hetagent.runtime.load import request_input
        futs = [rt.submit(request_input(rt.d.graph, "x")) for _ in range(12)]
        res = [f.result(timeout=60) for f in futs]
    finally:
        rt.max_inflight = old
    st = [r.status for r in res]
    assert st.count("refused") >= 1 and st.count("completed") >= 2
    assert all(s in ("completed", "refused") for s in st)
    assert all("over capacity" in r.error for r in res if r.status == "refused")


def test_cli_run_json(ray_local, light, tmp_path, capsys):
    import argparse

    from hetagent.runtime.commands import add_commands
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(light))
    ap = argparse.ArgumentParser()
    add_commands(ap.add_subparsers(dest="cmd"))
    a = ap.parse_args(["run", str(f), "--requests", "5", "--concurrency", "2", "--json"])
    a.func(a)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    doc = json.loads(out)
    for k in ("requests", "completed", "failed", "refused", "lost", "latency_ms",
              "sla_attainment", "emulated"):
        assert k in doc
    assert doc["requests"] == 5 and doc["lost"] == 0 and set(doc["latency_ms"]) == {"p50", "p95", "p99"}


def test_emulated_device_held_to_prediction(ray_local, light):
    from hetagent.runtime.commands import run
    p = json.loads(json.dumps(light))
    for pl in p["placements"]:
        if pl["operator"] == "search.compute":
            pl["device"], pl["latency_ms"] = "h100", 150.0
    p["fleet"]["h100"] = 1
    s = run(p, requests=4, concurrency=2)
    _counted(s, 4)
    assert s["emulated"] == ["search.compute"]
    assert s["per_stage_ms"]["search.compute"]["p50"] >= 150.0
    assert s["standin"]["search.compute"]["slower_than_predicted"] == 0


class _FakeOpenAI(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        req = json.loads(self.rfile.read(n))
        body = json.dumps({"choices": [{"text": f" fake answer ({req['max_tokens']} tokens)"}],
                           "usage": {"completion_tokens": 3}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_llm_bound_to_openai_endpoint_and_served(ray_local, tmp_path_factory):
    from fastapi.testclient import TestClient

    from hetagent.runtime.commands import deploy
    from hetagent.runtime.service import create_app
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d" % srv.server_address[1]
    plan = _plan(tmp_path_factory, CHAT, "chat")
    r = deploy(plan, endpoints={"answer.*": {"base_url": url}})
    try:
        assert r.d.emulated_ops() == []
        c = TestClient(create_app(r))
        assert c.post("/v1/chat/completions", json={"messages": [
            {"role": "user", "content": "hello?"}]}).json()["choices"][0]["message"]["content"] \
            == "fake answer (8 tokens)"
        doc = c.post("/v1/invoke", json={"text": "hi"}).json()
        assert doc["status"] == "completed" and "answer.decode" in doc["stages"]
        assert 'hetagent_requests_total{status="completed"} 2.0' in c.get("/metrics").text
        assert c.get("/health").json()["input"] == "text"
    finally:
        r.close()
        r.d.shutdown()
        srv.shutdown()


CHAIN = """
name: chain
sla: {latency_ms: 1000, percentile: 95}
rate: 10
nodes:
  - {id: q, kind: input, text_tokens: 8}
  - {id: h0, kind: memory_load, bytes: 64, inputs: [q]}
  - {id: h1, kind: memory_load, bytes: 64, inputs: [h0]}
  - {id: h2, kind: memory_load, bytes: 64, inputs: [h1]}
  - {id: out, kind: output, inputs: [h2]}
"""


@pytest.mark.parametrize("fuse", [True, False])
def test_cheap_chain_fused_into_one_call(ray_local, tmp_path_factory, fuse):
    from hetagent.runtime.commands import deploy
    plan = _plan(tmp_path_factory, CHAIN, "chain")
    rt = deploy(plan, fuse=fuse)
    try:
        ops = [n for n in rt.d.graph.order if rt.d.graph.operators[n].kind == "memory.load"]
        assert len(ops) == 3
        if fuse:
            assert list(rt.d.groups.values()) == [ops] and len(rt.d.pools) == 1
            assert {rt.d.op_pool[n] for n in ops} == set(rt.d.pools)
        else:
            assert rt.d.groups == {} and len(rt.d.pools) == 3
        for _ in range(3):
            res = rt.call({"text": "hi", "question": "hi"}, timeout=60)
            assert res.status == "completed", res.error
            assert res.output["text"] == "hi"
            assert set(res.stages) == set(ops) and all(v >= 0 for v in res.stages.values())
        s = rt.metrics.summary()
        assert s["completed"] == 3 and s["lost"] == 0
    finally:
        rt.close()
        rt.d.shutdown()


CODE = """
name: code
sla: {latency_ms: 5000, percentile: 95}
rate: 2
nodes:
  - {id: q, kind: input, text_tokens: 8}
  - id: shout
    kind: code
    language: python3
    inputs: [q]
    source: |
      def main(question: str) -> dict:
          if "bad" in question:
              raise ValueError("refusing " + question)
          return {"text": question.upper()}
  - {id: out, kind: output, inputs: [shout]}
"""


def test_code_node_source_runs_sandboxed_and_fails_per_request(ray_local, tmp_path_factory):
    """Real code from the workflow runs in the sandbox; its failure fails that request only."""
    from hetagent.runtime.commands import deploy
    from hetagent.runtime.load import request_input
    plan = _plan(tmp_path_factory, CODE, "code")
    r = deploy(plan)
    try:
        good = [r.submit(request_input(r.d.graph, "hello there")) for _ in range(3)]
        bad = r.submit(request_input(r.d.graph, "a bad one"))
        res = [f.result(timeout=120) for f in good]
        assert [x.status for x in res] == ["completed"] * 3
        assert res[0].output["text"] == "HELLO THERE"
        b = bad.result(timeout=120)
        assert b.status == "failed" and "ValueError: refusing a bad one" in b.error
    finally:
        r.close()
        r.d.shutdown()
