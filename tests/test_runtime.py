"""Runtime pieces that need no Ray: sandbox, loopback tool, plan graph and guards, metrics, the slow
path's change penalty, and the HTTP service's validation (on a stub runtime)."""
import random
import time

import pytest

from hetagent.backends import http_tool, sandbox
from hetagent.errors import HetagentError

LIGHT = """
name: light
sla: {latency_ms: 5000, percentile: 95}
rate: 5
nodes:
  - {id: q, kind: input, text_tokens: 16}
  - id: loop
    kind: loop
    expected_iterations: 1.5
    max_iterations: 2
    inputs: [q]
    body:
      - {id: search, kind: tool, tool: loopback_search, latency_ms: 5}
  - {id: glue, kind: code, cpu_ms: 1, inputs: [loop, q]}
  - {id: out, kind: output, inputs: [glue]}
"""


@pytest.fixture(scope="module")
def light_plan(tmp_path_factory):
    from hetagent import api
    f = tmp_path_factory.mktemp("wf") / "light.yaml"
    f.write_text(LIGHT)
    return api.plan(str(f), fleet="local-cpu")


# ---- sandbox (tests/test_sandbox.py tries it for real) --------------------------------------------

def test_sandbox_killed_is_retryable_and_a_code_failure_is_not():
    """Ray kills a dying worker's children with SIGKILL; that must read as retryable, not as the
    code's own failure (which once failed a request the runtime should have retried)."""
    pytest.importorskip("ray")
    from ray.exceptions import RayTaskError
    from hetagent.runtime.router import _retryable
    killed = sandbox.SandboxKilled("the code node's sandbox was killed from outside (SIGKILL)")
    assert _retryable(RayTaskError("call", "", killed).as_instanceof_cause())
    assert not _retryable(RayTaskError("call", "", sandbox.SandboxError("x")).as_instanceof_cause())


# ---- loopback tool -------------------------------------------------------------------------------

def test_search_tool_and_timeout():
    s = http_tool.SearchToolServer(["the placement MILP picks devices", "piper speaks"]).start()
    slow = http_tool.SearchToolServer(["x"], delay_ms=1500).start()
    try:
        doc, n = http_tool.search(s.url, "which devices does placement pick", 1)
        assert n > 0 and "MILP" in doc["results"][0]["text"]
        t = time.perf_counter()
        with pytest.raises(http_tool.ToolTimeout):
            http_tool.search(slow.url, "x", timeout_s=0.2)
        assert time.perf_counter() - t < 1.0
        with pytest.raises(http_tool.ToolTimeout):
            http_tool.search(s.url, "x", timeout_s=0)
    finally:
        s.stop()
        slow.stop()


def test_openai_endpoint_timeout():
    from hetagent.backends.openai_endpoint import EndpointTimeout, OpenAIEndpoint
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)                       # accepts connections, never answers
    try:
        url = "http://127.0.0.1:%d" % sock.getsockname()[1]
        with pytest.raises(EndpointTimeout):
            OpenAIEndpoint(url, timeout_s=0.3).complete("hi", 4)
    finally:
        sock.close()


# ---- graph, guards, capacity ---------------------------------------------------------------------

def test_graph_from_plan_guards(light_plan):
    from hetagent.runtime.graph import from_plan, planned_capacity
    g = from_plan(light_plan.to_json())
    assert set(g.operators) == {p.operator for p in light_plan.placements}
    assert "loop" in g.loops and 0 < g.loops["loop"].q < 1
    it2 = [n for n in g.operators if ".it2." in n]
    assert it2 and all(g.operators[n].loops == [("loop", 2)] for n in it2)
    rng = random.Random(0)
    runs = [g.draw(rng) for _ in range(2000)]
    mean = sum(r["iterations"]["loop"] for r in runs) / len(runs)
    assert abs(mean - 1.5) < 0.06                      # the workflow's expected iterations
    one = {"iterations": {"loop": 1}, "arms": {}}
    assert not (g.active(one) & set(it2))
    assert planned_capacity(g)["rps"] > 0


def test_bad_plan_file(tmp_path):
    from hetagent.runtime.commands import _load_plan
    with pytest.raises(HetagentError, match="no such plan"):
        _load_plan(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(HetagentError, match=r"bad.json:1: not valid JSON \(plan.json\)"):
        _load_plan(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(HetagentError, match="not a plan"):
        _load_plan(tmp_path / "list.json")


# ---- metrics ------------------------------------------------------------------------------------

def test_metrics_counts_every_request():
    from hetagent.runtime.metrics import RunMetrics, format_summary
    m = RunMetrics(sla_ms=100)
    for i, (st, lat) in enumerate([("completed", 50), ("completed", 150), ("failed", None),
                                   ("refused", None), ("pending", None)]):
        r = m.new(str(i))
        r.status, r.latency_ms = st, lat
    s = m.summary()
    assert (s["requests"], s["completed"], s["failed"], s["refused"], s["lost"]) == (5, 2, 1, 1, 1)
    assert s["sla_attainment"] == 0.5
    assert "lost 1" in format_summary(s)


# ---- slow path -----------------------------------------------------------------------------------

class _StubDeployment:
    def __init__(self, plan):
        from hetagent.runtime.graph import from_plan
        self.plan_source = plan
        self.graph = from_plan(plan)
        self.rebinds = []

    def devices_used(self):
        return {"local-cpu"}

    def rebind(self, graph):
        self.rebinds.append(graph)
        return []


class _StubRuntime:
    def __init__(self, plan, rate):
        from hetagent.runtime.metrics import RunMetrics
        self.d = _StubDeployment(plan)
        self.metrics = RunMetrics(5000)
        self.sla_ms = 5000
        self.rate = rate

    def feed(self, n):
        for i in range(n):
            r = self.metrics.new(f"r{time.time()}{i}")
            r.status, r.latency_ms = "completed", 10.0


def test_replan_change_penalty_and_no_flapping(light_plan, monkeypatch):
    import io

    from hetagent.placement.plan import Plan
    from hetagent.runtime import deploy, replan

    class copy:   # plans deep-copied through their JSON (the solver's objects do not copy)
        @staticmethod
        def deepcopy(p):
            return Plan.from_json(p.to_json())
    monkeypatch.setattr(deploy, "cluster_devices", lambda: {"local-cpu": 1.0})
    cheaper = copy.deepcopy(light_plan)
    cheaper.placements[0].replicas += 1
    cheaper.tco = dict(light_plan.tco, per_hour=light_plan.tco["per_hour"] * 0.5)
    same_cost = copy.deepcopy(cheaper)
    same_cost.tco = dict(light_plan.tco)
    plans = {"next": same_cost}
    rt = _StubRuntime(light_plan, 5)
    rp = replan.Replanner(rt, solver=lambda p, rate=None, alive=None: plans["next"],
                          window_s=5, min_requests=3, out=io.StringIO())
    rt.feed(100)                                           # 20/s against a planned 5/s
    rp.check()
    # a rate drift forces the re-plan, a change with no saving would not be taken otherwise
    assert rp.events and rp.events[-1]["event"] == "replan"
    assert len(rt.d.rebinds) == 1
    # back to the original plan at once: refused (cooldown), whatever the cost
    back = copy.deepcopy(light_plan)
    back.tco = dict(light_plan.tco, per_hour=light_plan.tco["per_hour"] * 0.1)
    plans["next"] = back
    rp.check()
    assert len(rt.d.rebinds) == 1
    # advisory: proposes, never applies
    rt2 = _StubRuntime(light_plan, 5)
    rp2 = replan.Replanner(rt2, advisory=True, solver=lambda p, rate=None, alive=None: cheaper,
                           window_s=5, min_requests=3, out=io.StringIO())
    rt2.feed(100)
    ev = rp2.check()
    assert ev["event"] == "replan" and ev["advisory"] and not rt2.d.rebinds


def test_remaining_fleet_is_owned(light_plan):
    import yaml

    from hetagent.runtime.replan import remaining_fleet_yaml
    doc = yaml.safe_load(remaining_fleet_yaml(light_plan, {"local-cpu": 1.0, "h100": 0.0}))
    assert doc["mode"] == "owned" and [d["id"] for d in doc["devices"]] == ["local-cpu"]
    with pytest.raises(HetagentError):
        remaining_fleet_yaml(light_plan, {})


# ---- service validation (stub runtime, no Ray) ---------------------------------------------------

class _FakeRuntime:
    def __init__(self, plan):
        from concurrent.futures import Future

        from hetagent.runtime.metrics import RunMetrics
        from hetagent.runtime.router import Result
        self.d = _StubDeployment(plan)
        self.d.pools = {}
        self.d.emulated_ops = lambda: []
        self.metrics = RunMetrics(5000)
        self.inflight, self.max_inflight, self.listeners = 0, 4, []
        self._Future, self._Result = Future, Result

    def submit(self, payload, deadline_s=None):
        f = self._Future()
        if payload.get("text") == "refuse":
            f.set_result(self._Result("x", "refused", error="over capacity"))
        else:
            f.set_result(self._Result("x", "completed", 1.0, {"text": "echo " + payload["text"]}))
        return f


def test_service_validation_and_auth(light_plan):
    from fastapi.testclient import TestClient

    from hetagent.runtime.service import create_app, is_loopback, serve
    app = create_app(_FakeRuntime(light_plan), api_key="k" * 32, max_body_bytes=2048)
    c = TestClient(app, raise_server_exceptions=False)
    auth = {"Authorization": "Bearer " + "k" * 32}
    assert c.get("/health").json()["status"] == "ok"                    # no key needed
    assert c.post("/v1/invoke", json={"text": "hi"}).status_code == 401
    assert c.post("/v1/invoke", json={"text": "hi"}, headers={"X-API-Key": "wrong"}).status_code == 401
    r = c.post("/v1/invoke", json={"text": "hi"}, headers=auth)
    assert r.status_code == 200 and r.json()["text"] == "echo hi"
    r = c.post("/v1/invoke", json={"text": "refuse"}, headers=auth)
    assert r.status_code == 429 and "capacity" in r.json()["error"]
    for body, code in [({"txt": "hi"}, 422), ({"text": 5}, 422), ({}, 400),
                       ({"audio_wav_b64": "notbase64!!"}, 400)]:
        r = c.post("/v1/invoke", json=body, headers=auth)
        assert r.status_code == code, (body, r.text)
        assert "Traceback" not in r.text and "error" in r.json()
    r = c.post("/v1/invoke", content=b"{" + b" " * 5000 + b"}", headers={**auth,
               "Content-Type": "application/json"})
    assert r.status_code == 413
    r = c.post("/v1/invoke", content=b"{bad json", headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text
    r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hello"}]},
               headers=auth)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo hello"
    assert c.post("/v1/chat/completions", json={"messages": []}, headers=auth).status_code == 422
    assert "hetagent_requests" in c.get("/metrics", headers=auth).text
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    with pytest.raises(HetagentError, match="API key"):
        serve(light_plan, host="0.0.0.0", api_key=None)


def test_cli_registration():
    import argparse

    from hetagent.runtime.commands import add_commands
    ap = argparse.ArgumentParser()
    add_commands(ap.add_subparsers(dest="cmd"))
    a = ap.parse_args(["run", "p.json", "--requests", "3", "--concurrency", "2", "--json"])
    assert (a.requests, a.concurrency, a.json, a.rate) == (3, 2, True, None)
    with pytest.raises(SystemExit):
        ap.parse_args(["run", "p.json", "--rate", "1", "--concurrency", "2"])
    a = ap.parse_args(["serve", "p.json", "--port", "9000"])
    assert a.port == 9000 and a.host == "127.0.0.1"
