"""The runtime on Ray Serve (one embedded Ray with Serve shared by this module, tests/conftest.py): light
workflows (loopback tool, sandboxed code, an LLM bound to a fake OpenAI-compatible server), so no model
loads. Every request is counted: lost is always 0."""
import json
import os
import signal
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from conftest import LIGHT  # noqa: E402

CHAT = """
name: chat
sla: {latency_ms: 5000, percentile: 95}
rate: 2
nodes:
  - {id: q, kind: input, text_tokens: 16}
  - {id: answer, kind: llm, model: gemma-3-270m, prompt_tokens: 64, output_tokens: 8, inputs: [q]}
  - {id: out, kind: output, inputs: [answer]}
"""
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
Q = {"text": "how are devices placed?", "question": "how are devices placed?"}


def _plan(tmp_path_factory, text, name):
    from hetagent import api
    f = tmp_path_factory.mktemp(name) / f"{name}.yaml"
    f.write_text(text)
    return api.plan(str(f), fleet="local-cpu", validate=False, robustness=False).to_json()


def _emulate(plan, op, device, latency_ms):
    """The plan with one operator (and its pool) on an absent device, held to latency_ms (its service
    time: no planned queueing)."""
    p = json.loads(json.dumps(plan))
    for pl in p["placements"]:
        if pl["operator"] == op:
            pl["device"], pl["latency_ms"], pl["service_ms"] = device, latency_ms, latency_ms
    for q in p["pools"]:
        if op in q["operators"]:
            q["device"] = device
    p["fleet"][device] = 1
    return p


def _get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return r.status, r.read().decode()


def _post(port, path, doc):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(doc).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def light(tmp_path_factory):
    return _plan(tmp_path_factory, LIGHT, "light")


@pytest.fixture(scope="module")
def rt(serve_instance, light):
    from hetagent.runtime.commands import deploy
    r = deploy(light, route_prefix="/light", tool_delay_ms=200)
    yield r
    r.close()


def _counted(s, n):
    assert s["requests"] == n
    assert s["completed"] + s["failed"] + s["refused"] == n
    assert s["lost"] == 0


def test_run_closed_and_open_loop(rt):
    from hetagent.runtime.commands import drive
    s = drive(rt, requests=12, concurrency=3)
    _counted(s, 12)
    assert s["completed"] == 12 and s["emulated"] == [] and s["host_bound"] == []
    assert set(s["per_stage_ms"]) == {"search.lookup", "search.compute", "glue"}
    assert s["sla_attainment"] == 1.0 and s["per_stage_ms"]["search.lookup"]["p50"] >= 200
    assert set(s["pools"]) == {"tool.lookup:loopback_search", "tool.compute:loopback_search",
                               "compute.code:light/glue"}
    s = drive(rt, requests=24, rate=40)
    _counted(s, 36)


def test_http_through_serve_proxy(rt, serve_instance):
    port = serve_instance
    code, routes = _get(port, "/-/routes")
    assert code == 200 and json.loads(routes)["/light"] == rt.d.ingress_app
    assert _get(port, "/-/healthz") == (200, "success")
    code, doc = _post(port, "/light/invoke", {"text": "which devices?"})
    assert code == 200 and doc["status"] == "completed" and "glue" in doc["stages"]
    code, doc = _post(port, "/light/invoke", {"text": "x", "deadline_ms": 1})
    assert code == 429 and "deadline" in doc["error"]
    code, doc = _post(port, "/light/invoke", {"audio_wav_b64": "UklGRg=="})
    assert code == 400
    code, health = _get(port, "/light/health")
    assert code == 200 and json.loads(health)["pools"] == 3
    code, text = _get(port, "/light/metrics")
    assert 'hetagent_requests_total{status="completed"}' in text
    for metric in ("retries", "failures", "refusals", "lost"):
        assert f'hetagent_pool_{metric}_total{{pool="compute.code:light/glue"}}' in text


def _pid(rt, unit):
    app = rt.d.layout.units[unit].app
    return serve.get_deployment_handle(app, app).info.remote().result(timeout_s=30)["pid"]


def test_killed_replica_process_loses_no_request(rt, serve_instance):
    from hetagent.runtime.load import request_input
    unit = rt.d.layout.unit_of["search.lookup"]
    pid = _pid(rt, unit)
    payload = request_input(rt.d.graph, "retry me")
    before = len(rt.metrics.records)
    futs = [rt.submit(payload) for _ in range(6)]
    time.sleep(0.1)                          # the tool answers after 200 ms: six calls in flight
    os.kill(pid, signal.SIGKILL)
    futs += [rt.submit(payload) for _ in range(4)]
    res = [f.result(timeout=180) for f in futs]
    assert [r["status"] for r in res] == ["completed"] * 10, [r["error"] for r in res]
    assert sum(r["retries"] for r in res) >= 1
    assert _pid(rt, unit) != pid             # Serve replaced the replica
    assert len(rt.metrics.records) - before == 10
    text = _get(serve_instance, "/light/metrics")[1]
    retried = [ln for ln in text.splitlines() if ln.startswith(f'hetagent_pool_retries_total{{pool="{unit}"}}')]
    assert retried and float(retried[0].split()[-1]) >= 1


def test_admission_refuses_overload_at_once(serve_instance, light):
    """glue emulated at 400 ms on one slot: 2.5 requests/s. Twenty at once against an SLA of 3 s:
    the ones the queue would make late are refused at once, the admitted ones meet the SLA."""
    from hetagent.runtime.commands import deploy
    p = _emulate(light, "glue", "h100", 400.0)
    p["inputs"]["sla_ms"] = 3000.0
    r = deploy(p, app_prefix="overload.")
    try:
        assert r.emulation["shared"] == []           # a sandbox per call fits this host
        t0 = time.time()
        futs = [r.submit(Q) for _ in range(20)]
        res = [f.result(timeout=120) for f in futs]
        refused = [x for x in res if x["status"] == "refused"]
        done = [x for x in res if x["status"] == "completed"]
        assert len(refused) >= 10 and len(done) >= 3 and len(refused) + len(done) == 20
        waits = sorted(x["latency_ms"] for x in refused)              # answered at once
        assert waits[len(waits) // 2] < 100 and waits[-1] < 1000, waits
        assert all("over capacity" in x["error"] and x["refused_by"] for x in refused)
        late = [x["latency_ms"] for x in done if x["latency_ms"] > 3000]
        assert len(late) <= 1 and all(x["latency_ms"] < 3600 for x in done), \
            [(x["latency_ms"], x["estimate"]) for x in done]
        assert all(x["stages"]["glue"] >= 400 for x in done)          # held to its device time
        s = r.report(time.time() - t0)
        assert s["emulated"] == ["glue"] and s["lost"] == 0
        assert s["standin"]["glue"]["slower_than_predicted"] == 0 and s["host_bound"] == []
    finally:
        r.close()


def test_cheap_chain_fused_into_one_unit(serve_instance, tmp_path_factory):
    from hetagent.runtime.commands import deploy
    from hetagent.runtime.deploy import Deployment
    plan = _plan(tmp_path_factory, CHAIN, "chain")
    unfused = Deployment(plan, fuse=False).layout_for(Deployment(plan).graph)
    assert len(unfused.units) == 3 and unfused.fused == []
    r = deploy(plan)
    try:
        ops = [n for n in r.d.graph.order if r.d.graph.operators[n].kind == "memory.load"]
        assert r.d.layout.fused == [ops] and len(r.d.layout.units) == 1
        assert r.d.layout.chains[ops[0]] == ops
        for _ in range(3):
            res = r.call({"text": "hi", "question": "hi"}, timeout=60)
            assert res["status"] == "completed", res["error"]
            assert res["output"]["text"] == "hi"
            assert set(res["stages"]) == set(ops) and all(v >= 0 for v in res["stages"].values())
        assert r.report()["fused"] == [ops]
    finally:
        r.close()


def test_new_plan_applied_make_before_break(serve_instance, light):
    """glue moves to another device (new pool under a new name, running before the ingress switches
    to it, the old one deleted after); search.compute gets a second replica in place. Requests sent
    all along complete."""
    from hetagent.runtime.commands import deploy
    r = deploy(light, app_prefix="mbb.")
    stop = threading.Event()
    futs = []

    def load():                   # 2.5 requests/s: what one sandbox slot carries on a busy host
        while not stop.is_set():
            futs.append(r.submit(Q))
            time.sleep(0.4)
    try:
        old_glue = r.d.layout.units[r.d.layout.unit_of["glue"]].app
        t = threading.Thread(target=load)
        t.start()
        time.sleep(1.0)
        new = _emulate(light, "glue", "h100", 20.0)
        for q in new["pools"]:
            if "search.compute" in q["operators"]:
                q["replicas"] = 2
        ev = r.apply(new)
        time.sleep(1.0)
        stop.set()
        t.join()
        res = [f.result(timeout=120) for f in futs]
        assert len(res) >= 5 and all(x["status"] == "completed" for x in res), \
            [x["error"] for x in res if x["status"] != "completed"]
        glue = r.d.layout.unit_of["glue"]
        assert ev["started"] == [glue] and ev["resized"] == ["tool.compute:loopback_search"]
        assert ev["deleted"] == [old_glue] and ev["switched_after_ready"] and ev["deleted_after_switch"]
        apps = serve.status().applications
        assert r.d.layout.units[glue].app in apps and old_glue not in apps
        assert r.call(Q, timeout=60)["ops"]["glue"]["emulated"]
    finally:
        stop.set()
        r.close()


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


def test_serve_an_llm_bound_to_an_openai_endpoint(serve_instance, tmp_path_factory):
    from hetagent.runtime.service import serve as serve_cmd
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d" % srv.server_address[1]
    plan = _plan(tmp_path_factory, CHAT, "chat")
    stop, ready, errors = threading.Event(), threading.Event(), []

    def run():
        try:
            serve_cmd(plan, port=serve_instance, endpoints={"answer.*": {"base_url": url}},
                      replan="advisory", view=False, stop=stop, ready=ready, route_prefix="/chat")
        except Exception as e:  # noqa: BLE001
            errors.append(e)
            ready.set()
    t = threading.Thread(target=run)
    t.start()
    try:
        assert ready.wait(300) and not errors, errors
        code, doc = _post(serve_instance, "/chat/v1/chat/completions",
                          {"messages": [{"role": "user", "content": "hello?"}]})
        assert code == 200 and doc["choices"][0]["message"]["content"] == "fake answer (8 tokens)"
        code, doc = _post(serve_instance, "/chat/invoke", {"text": "hi"})
        assert code == 200 and "answer.decode" in doc["stages"]
        code, health = _get(serve_instance, "/chat/health")
        assert json.loads(health)["emulated"] == [] and json.loads(health)["input"] == "text"
        assert 'hetagent_requests_total{status="completed"} 2.0' in _get(serve_instance, "/chat/metrics")[1]
    finally:
        stop.set()
        t.join(120)
        srv.shutdown()
    assert "/chat" not in json.loads(_get(serve_instance, "/-/routes")[1])   # removed on exit


def test_cli_run_json(serve_instance, light, tmp_path, capsys):
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
              "sla_attainment", "emulated", "host_bound"):
        assert k in doc
    assert doc["requests"] == 5 and doc["lost"] == 0 and set(doc["latency_ms"]) == {"p50", "p95", "p99"}


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


def test_code_node_source_runs_sandboxed_and_fails_per_request(serve_instance, tmp_path_factory):
    """Real code from the workflow runs in the sandbox; its failure fails that request only."""
    from hetagent.runtime.commands import deploy
    plan = _plan(tmp_path_factory, CODE, "code")
    r = deploy(plan, route_prefix="/code")
    try:
        res = [r.call({"text": "hello there", "question": "hello there"}, timeout=120) for _ in range(3)]
        assert [x["status"] for x in res] == ["completed"] * 3, res
        assert res[0]["output"]["text"] == "HELLO THERE"
        b = r.call({"text": "a bad one", "question": "a bad one"}, timeout=120)
        assert b["status"] == "failed" and "ValueError: refusing a bad one" in b["error"]
    finally:
        r.close()
