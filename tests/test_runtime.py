"""Runtime pieces that need no Ray: sandbox, loopback tool, plan graph and guards, metrics and the
run's diagnosis, admission, the ingress's request path and a pool replica (driven directly, with real
executors), the slow path's change penalty, and the HTTP service's validation."""
import asyncio
import base64
import io
import random
import time
import wave

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
    from hetagent.runtime.ingress import retryable
    killed = sandbox.SandboxKilled("the code node's sandbox was killed from outside (SIGKILL)")
    assert retryable(RayTaskError("call", "", killed).as_instanceof_cause())
    assert not retryable(RayTaskError("call", "", sandbox.SandboxError("x")).as_instanceof_cause())


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


# ---- metrics and the run's diagnosis --------------------------------------------------------------

def test_metrics_counts_every_request_and_says_what_set_the_pace():
    from hetagent.runtime.metrics import RunMetrics, format_summary
    m = RunMetrics(sla_ms=100)
    for i, (st, lat) in enumerate([("completed", 50), ("completed", 150), ("failed", None),
                                   ("refused", None), ("pending", None)]):
        m.new(str(i))
        if st != "pending":
            ops = {"a": {"emulated": True, "own_ms": 90.0, "predicted_ms": 10.0,
                         "standin_set_pace": True}} if st == "completed" else {}
            m.record(str(i), {"status": st, "latency_ms": lat, "stages": {"a": 80.0} if lat else {},
                              "service": {"a": 70.0} if lat else {}, "ops": ops})
    s = m.summary({"per_stage_ms": {"a": 10.0}}, ["a"])
    assert (s["requests"], s["completed"], s["failed"], s["refused"], s["lost"]) == (5, 2, 1, 1, 1)
    assert s["sla_attainment"] == 0.5
    assert s["host_bound"] == ["a"] and s["standin"]["a"]["slower_than_predicted"] == 2
    # the stage missed its prediction because the host's stand-in set the pace, not the plan
    assert s["diagnosis"]["host_bound"] == ["a"] and s["diagnosis"]["prediction_missed"] == []
    assert "this host was the bottleneck" in s["diagnosis"]["verdict"]
    assert "lost 1" in format_summary(s) and "host-bound" in format_summary(s)
    m2 = RunMetrics(sla_ms=100)
    m2.new("x")
    m2.record("x", {"status": "completed", "latency_ms": 150, "stages": {"a": 80.0},
                    "service": {"a": 70.0}, "ops": {"a": {"emulated": False}}})
    d = m2.summary({"per_stage_ms": {"a": 10.0}}, [])["diagnosis"]
    assert d["prediction_missed"] == ["a"] and "prediction missed at a" in d["verdict"]
    # the replica's own time is held to the plan's service time, not to its latency with queueing
    d = m2.summary({"per_stage_ms": {"a": 75.0}}, [], predicted_service={"a": 75.0})["diagnosis"]
    assert d["prediction_missed"] == []
    d = m2.summary({"per_stage_ms": {"a": 75.0}}, [], predicted_service={"a": 40.0})["diagnosis"]
    assert d["prediction_missed"] == ["a"]


# ---- admission ----------------------------------------------------------------------------------------

def test_admission_follows_measured_service_and_backlog(light_plan):
    from hetagent.runtime.admission import Admission
    from hetagent.runtime.graph import from_plan
    g = from_plan(light_plan.to_json())
    ops = [n for n in g.order if g.operators[n].kind != "llm.kv_transfer"]
    unit_of = {n: "u-" + n for n in ops}
    adm = Admission(g, unit_of, {u: 1 for u in unit_of.values()}, cpu_real=set(), cores=2)
    one = {"iterations": {"loop": 1}, "arms": {}}
    active = g.active(one)
    assert adm.decide(active, deadline_ms=None, sla_ms=5000).admit
    # a deadline nobody can meet is refused at once, even when idle
    d = adm.decide(active, deadline_ms=0.001, sla_ms=5000)
    assert not d.admit and "deadline" in d.reason
    # the pool reports 1 s per call: ten requests queued ahead are 10 s of waiting at one slot
    for _ in range(3):
        adm.observe("glue", "u-glue", {"service_ms": 1000.0, "cpu_ms": 5.0})
    assert adm.service_ms["glue"] > 600
    for i in range(10):
        adm.admit(f"r{i}", active)
    d = adm.decide(active, deadline_ms=None, sla_ms=5000)
    assert not d.admit and d.estimate.bottleneck == "u-glue" and d.estimate.wait_ms > 5000
    assert "over capacity" in d.reason
    for i in range(10):                     # the queue drains: admitted again
        adm.done(f"r{i}", "glue")
    assert adm.decide(active, deadline_ms=None, sla_ms=5000).admit
    # a request longer than the SLA on its own is admitted when nothing waits ahead of it
    for i in range(10):
        adm.release(f"r{i}")
    for _ in range(10):
        adm.observe("glue", "u-glue", {"service_ms": 9000.0})
    assert adm.decide(active, deadline_ms=None, sla_ms=5000).admit
    # requests that ran twice as long as estimated make every estimate twice as long
    base = adm.estimate(active).finish_ms
    for _ in range(20):
        adm.observe_latency(2 * base, base)
    assert 1.9 < adm.estimate(active).correction <= 2.0
    assert abs(adm.estimate(active).finish_ms - 2 * base) < 0.1 * base
    adm.enabled = False
    assert adm.decide(active, deadline_ms=0.001, sla_ms=5000).admit


def test_admission_holds_the_tail_when_requests_scatter_around_their_estimate(light_plan):
    """With latencies that scatter widely around their estimates (contended cores), a request estimated
    at 0.85 x the SLA is refused: 1 in 4 recent ones ran 40 % over their estimate. Steady ones leave the
    limit at 0.9 x the SLA."""
    from hetagent.runtime.admission import Admission
    from hetagent.runtime.graph import from_plan
    g = from_plan(light_plan.to_json())
    ops = [n for n in g.order if g.operators[n].kind != "llm.kv_transfer"]
    unit_of = {n: "u-" + n for n in ops}
    active = g.active({"iterations": {"loop": 1}, "arms": {}})
    adm = Admission(g, unit_of, {u: 1 for u in unit_of.values()}, cpu_real=set(), cores=2)
    first = next(n for n in g.order if n in active and n in unit_of and not g.preds[n])
    adm.service_ms.update({n: 0.0 for n in ops})
    adm.service_ms[first] = 425.0
    for i in range(9):                                    # 0.85 x the SLA of 5 s, mostly waiting
        adm.admit(f"r{i}", {first})
    assert adm.estimate(active).finish_ms == pytest.approx(4250.0)
    for _ in range(7):                                    # too few to judge the scatter by
        adm.observe_latency(1400.0, 1000.0)
    assert adm.spread() == 1.0
    for _ in range(50):                                   # steady: every request on its estimate
        adm.observe_latency(1000.0, 1000.0)
    adm.correction = 1.0
    assert adm.spread() == pytest.approx(1.0) and adm.decide(active, deadline_ms=None, sla_ms=5000).admit
    for i in range(50):                                   # 1 in 4 runs 40 % over
        adm.observe_latency(1400.0 if i % 4 == 0 else 1000.0, 1000.0)
    adm.correction = 1.0
    assert adm.spread() == pytest.approx(1.4)
    d = adm.decide(active, deadline_ms=None, sla_ms=5000)
    assert not d.admit and "held to 0.71 x" in d.reason


def test_admission_waits_over_every_slot_and_only_for_what_is_ahead(light_plan):
    """A pool's backlog is spread over all its replicas' slots, and drains while a new request travels
    to it: ten requests' calls at the end of the path are no wait for one whose own path to there is
    longer than that backlog (the README run refused on the voice agent's last pool for that)."""
    from hetagent.runtime.admission import Admission
    from hetagent.runtime.graph import from_plan
    from hetagent.runtime.pools import UnitRoute
    assert UnitRoute("a", "a", slots=1, replicas=2).capacity == 2
    g = from_plan(light_plan.to_json())
    ops = [n for n in g.order if g.operators[n].kind != "llm.kv_transfer"]
    unit_of = {n: "u-" + n for n in ops}
    active = g.active({"iterations": {"loop": 1}, "arms": {}})
    first = next(n for n in g.order if n in active and n in unit_of and not g.preds[n])
    last = "glue"
    for unit_slots in (1, 2):
        adm = Admission(g, unit_of, {u: unit_slots for u in unit_of.values()}, cpu_real=set(), cores=2)
        adm.service_ms.update({n: 100.0 for n in ops})
        for i in range(10):
            adm.admit(f"r{i}", active)
        est = adm.estimate(active)
        assert est.bottleneck == "u-" + first and est.wait_ms == pytest.approx(1000.0 / unit_slots)
    # the first pool is idle; the last one has 10 calls of 100 ms ahead, 1 s of work, and the request
    # reaches it after its own path there (100 ms per operator before it)
    adm = Admission(g, unit_of, {u: 1 for u in unit_of.values()}, cpu_real=set(), cores=2)
    adm.service_ms.update({n: 100.0 for n in ops})
    for i in range(10):
        adm.admit(f"r{i}", {last})
    before = sum(1 for n in g.order if n in active and n in unit_of and n != last)
    est = adm.estimate(active)
    assert est.bottleneck == "u-" + last
    assert est.wait_ms == pytest.approx(1000.0 - 100.0 * before)
    adm.service_ms[first] = 2000.0                # now it reaches the last pool after the backlog drained
    assert adm.estimate(active).wait_ms == 0.0


# ---- the ingress and pool replicas, driven without Ray -------------------------------------------------

class _Local:
    """A plan's units as PoolReplica objects in this process, behind an IngressCore."""

    def __init__(self, plan, fail=None, hang=None, **cfg):
        from hetagent.backends.http_tool import SearchToolServer
        from hetagent.runtime.deploy import Deployment
        from hetagent.runtime.ingress import IngressCore
        from hetagent.runtime.pools import PoolReplica
        self.d = Deployment(plan, real_devices={"local-cpu"})
        self.tool = SearchToolServer().start()
        self.d.tool_url = self.tool.url
        self.d.layout = self.d.layout_for(self.d.graph)
        self.replicas = {s.app: PoolReplica(s) for s in self.d.layout.units.values()}
        self.fail, self.hang, self.calls = dict(fail or {}), hang, []
        self.core = IngressCore(self.d.ingress_config(**cfg), self.call_unit)

    async def call_unit(self, route, req):
        self.calls.append((route.app, tuple(req["ops"])))
        if self.fail.get(route.app, 0) > 0:
            self.fail[route.app] -= 1
            raise type("ActorDiedError", (Exception,), {})("the replica died mid-call")
        if self.hang and self.hang in route.app:
            await asyncio.sleep(30)
        return await self.replicas[route.app].call(req)

    def close(self):
        self.tool.stop()
        for r in self.replicas.values():
            r.close()


def _app(local, pool_prefix):
    return next(a for a in local.replicas if pool_prefix in a)


def test_ingress_drives_the_graph_retries_and_counts(light_plan):
    loc = _Local(light_plan.to_json(), fail=None)
    glue = _app(loc, "glue")
    loc.fail[glue] = 1                          # the first call to glue finds its replica dead
    try:
        async def go():
            return await asyncio.gather(*(loc.core.handle({"text": "how are devices placed?",
                                                           "question": "how are devices placed?"})
                                          for _ in range(4)))
        res = asyncio.run(go())
        assert [r["status"] for r in res] == ["completed"] * 4, [r["error"] for r in res]
        assert sum(r["retries"] for r in res) == 1
        assert {"loop.it1.search.lookup", "glue"} <= set(res[0]["stages"])
        assert res[0]["output"]["tool_results"]          # the real loopback tool answered
        text = loc.core.metrics_text()
        assert 'hetagent_requests_total{status="completed"} 4.0' in text
        assert f'hetagent_pool_retries_total{{pool="{loc.d.layout.unit_of["glue"]}"}} 1.0' in text
        assert 'hetagent_pool_lost_total{pool="tool.lookup:loopback_search"} 0.0' in text
        st = loc.core.stats(60)
        assert st["completed"] == 4 and st["sla_attainment"] == 1.0
    finally:
        loc.close()


def test_deadlines_refuse_at_once_or_fail_at_the_deadline(light_plan):
    loc = _Local(light_plan.to_json(), hang="glue")
    try:
        async def go():
            t = time.perf_counter()
            r1 = await loc.core.handle({"text": "x", "question": "x"}, deadline_ms=0.001)
            t1 = time.perf_counter() - t
            t = time.perf_counter()
            r2 = await loc.core.handle({"text": "x", "question": "x"}, deadline_ms=400)
            t2 = time.perf_counter() - t
            await asyncio.sleep(0)
            pending = [x for x in asyncio.all_tasks() if x is not asyncio.current_task()]
            return r1, t1, r2, t2, pending
        r1, t1, r2, t2, pending = asyncio.run(go())
        assert r1["status"] == "refused" and "deadline of 0 ms" in r1["error"] and t1 < 0.05
        assert r2["status"] == "failed" and "deadline" in r2["error"] and 0.35 < t2 < 1.5
        assert "compute.code" in r2["error"]              # it says which pool it was waiting on
        assert pending == []                              # nothing left running after the deadline
        text = loc.core.metrics_text()
        assert 'hetagent_pool_lost_total{pool="compute.code:light/glue"} 1.0' in text
        assert 'hetagent_pool_refusals_total{pool="deadline"} 1.0' in text
    finally:
        loc.close()


def test_emulated_pool_holds_its_time_and_shares_outputs(light_plan):
    from hetagent.runtime.executors import OpSpec
    from hetagent.runtime.pools import PoolReplica, PoolSpec
    spec = OpSpec("c", "tool.compute", {}, "h100", service_ms=150.0, emulated=True, bound="compute")
    rep = PoolReplica(PoolSpec("tool.compute:x", "app", "h100", {"c": spec}, slots=8, batch=1,
                               emulated=True))
    req = {"ops": ["c"], "ctx": {"request_id": "r"},
           "inputs": [{"tool_response": {"results": [{"text": "hello"}]}}]}

    async def go(mode):
        t = time.perf_counter()
        res = await asyncio.gather(*(rep.call({**req, "standin": mode}) for _ in range(2)))
        return res, time.perf_counter() - t
    try:
        (a, b), wall = asyncio.run(go("shared"))
        assert a[1]["tool_results"] == ["hello"] == b[1]["tool_results"]
        metas = [a[0][0], b[0][0]]
        assert sorted(m["shared"] for m in metas) == [False, True]      # computed once
        # two calls in a replica whose plan batch is 1: compute-bound, each stretched to 2 x 150 ms
        assert all(m["predicted_ms"] == 300.0 and m["service_ms"] >= 299 for m in metas)
        assert not any(m["standin_set_pace"] for m in metas)
        (a, _), _ = asyncio.run(go("full"))
        assert a[0][0]["shared"] is False and a[0][0]["emulated"]
    finally:
        rep.close()


def test_warm_up_shares_standins_the_host_cannot_carry(light_plan):
    p = light_plan.to_json()
    for pl in p["placements"]:
        if pl["operator"] == "glue":            # code on an absent device: the stand-in is a real sandbox
            pl["device"], pl["latency_ms"], pl["service_ms"] = "h100", 5.0, 5.0
    p["fleet"]["h100"] = 1
    for q in p["pools"]:
        if "glue" in q["operators"]:
            q["device"] = "h100"
    loc = _Local(p, seed=1)
    try:
        emu = asyncio.run(loc.core.warm_up({"text": "x", "question": "x"}, rate_rps=500.0))
        glue = loc.d.layout.unit_of["glue"]
        assert emu["shared"] == [glue] and emu["standin_cores_needed"] > emu["budget_cores"]
        assert "compute identical inputs once" in emu["why"]
        r = asyncio.run(loc.core.handle({"text": "x", "question": "x"}))
        assert r["status"] == "completed" and r["ops"]["glue"]["shared"]
        emu = asyncio.run(loc.core.warm_up({"text": "x", "question": "x"}, 500.0, mode="full"))
        assert emu["shared"] == [] and "--standin full" in emu["why"]
        assert loc.core.stats(60)["completed"] == 1     # warm-up requests are not counted
    finally:
        loc.close()


# ---- the HTTP service ------------------------------------------------------------------------------

def _wav(rate=16000, frames=1600, channels=1, width=2, extra=b""):
    import struct
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(16000)
        w.writeframes(b"\x01\x00" * frames * channels if width == 2 else b"\x01" * frames * channels)
    data = bytearray(buf.getvalue())
    data[24:32] = struct.pack("<II", rate, rate * channels * width)   # any rate, even 0 or 1 Hz
    return base64.b64encode(bytes(data) + extra).decode()


def test_service_validation_and_auth(light_plan):
    from fastapi.testclient import TestClient

    from hetagent.runtime.service import create_app, is_loopback, key_digest, serve
    loc = _Local(light_plan.to_json())
    try:
        app = create_app(loc.core, api_key_digest=key_digest("k" * 32), max_body_bytes=4096)
        c = TestClient(app, raise_server_exceptions=False)
        auth = {"Authorization": "Bearer " + "k" * 32}
        assert c.get("/health").json()["status"] == "ok"                    # no key needed
        assert c.post("/invoke", json={"text": "hi"}).status_code == 401
        assert c.post("/invoke", json={"text": "hi"}, headers={"X-API-Key": "wrong"}).status_code == 401
        for path in ("/invoke", "/v1/invoke"):
            r = c.post(path, json={"text": "which devices?"}, headers=auth)
            assert r.status_code == 200 and r.json()["status"] == "completed", r.text
        r = c.post("/invoke", json={"text": "x", "deadline_ms": 0.001}, headers=auth)
        assert r.status_code == 429 and "deadline" in r.json()["error"]
        for body, code in [({"txt": "hi"}, 422), ({"text": 5}, 422), ({}, 400),
                           ({"audio_wav_b64": _wav(frames=100)}, 400)]:   # a text workflow refuses audio
            r = c.post("/invoke", json=body, headers=auth)
            assert r.status_code == code, (body, r.text)
            assert "Traceback" not in r.text and "error" in r.json()
        r = c.post("/invoke", content=b"{" + b" " * 5000 + b"}", headers={**auth,
                   "Content-Type": "application/json"})
        assert r.status_code == 413
        r = c.post("/invoke", content=b"{bad json", headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 422 and "Traceback" not in r.text
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hello"}]},
                   headers=auth)
        assert r.status_code == 200 and r.json()["object"] == "chat.completion"
        assert c.post("/v1/chat/completions", json={"messages": []}, headers=auth).status_code == 422
        text = c.get("/metrics", headers=auth).text
        assert "hetagent_requests_total" in text and "hetagent_pool_refusals_total" in text
        assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
        with pytest.raises(HetagentError, match="API key"):
            serve(light_plan, host="0.0.0.0", api_key=None)
    finally:
        loc.close()


@pytest.mark.parametrize("wav,why", [
    (_wav(rate=1), "sample rate 1 Hz"),
    (_wav(rate=0), "sample rate 0 Hz"),
    (_wav(frames=0), "no audio"),
    (_wav(extra=b"\x01"), None),               # a trailing byte past the data chunk is ignored
    (base64.b64encode(base64.b64decode(_wav())[:-1]).decode(), "ragged"),
    (_wav(width=1), "only 16-bit"),
    ("bm90IGEgd2F2", "not a WAV file"),
])
def test_audio_is_validated_at_the_door(wav, why):
    from fastapi.testclient import TestClient

    from hetagent.runtime.service import create_app

    class AudioCore:
        graph = type("G", (), {"workflow": "voice"})()
        audio_in, audio_out = True, False

        async def handle(self, payload, deadline_ms=None):
            return {"id": "1", "status": "completed", "latency_ms": 1.0, "stages": {},
                    "output": {"text": f"{len(payload['audio'])} samples"}}

    c = TestClient(create_app(AudioCore()), raise_server_exceptions=False)
    r = c.post("/invoke", json={"audio_wav_b64": wav})
    if why is None:
        assert r.status_code == 200 and r.json()["text"] == "1600 samples"
    else:
        assert r.status_code == 400 and why in r.json()["error"], r.text
    assert c.post("/invoke", json={"text": "hi"}).status_code == 400       # audio in: text refused


# ---- slow path -----------------------------------------------------------------------------------

class _StubRunner:
    """What the Replanner reads and calls on a Runner."""

    def __init__(self, plan, rate):
        from hetagent.placement.plan import load_plan
        from hetagent.runtime.graph import from_plan
        from hetagent.runtime.metrics import RunMetrics
        self.plan = load_plan(plan)
        self.graph = from_plan(plan)
        self.metrics = RunMetrics(5000)
        self.sla_ms = 5000
        self.applied = []

    def devices_used(self):
        return {"local-cpu"}

    def recent(self, window_s):
        return self.metrics.recent(window_s)

    def apply(self, plan):
        self.applied.append(plan)
        return {"event": "apply"}

    def feed(self, n):
        for i in range(n):
            r = self.metrics.new(f"r{time.time()}{i}")
            r.status, r.latency_ms = "completed", 10.0


def test_replan_change_penalty_and_no_flapping(light_plan, monkeypatch):
    import io as _io

    from hetagent.placement.plan import Plan
    from hetagent.runtime import deploy, replan

    def clone(p):    # plans deep-copied through their JSON (the solver's objects do not copy)
        return Plan.from_json(p.to_json())
    monkeypatch.setattr(deploy, "cluster_devices", lambda: {"local-cpu": 1.0})
    cheaper = clone(light_plan)
    cheaper.placements[0].replicas += 1
    cheaper.tco = dict(light_plan.tco, per_hour=light_plan.tco["per_hour"] * 0.5)
    same_cost = clone(cheaper)
    same_cost.tco = dict(light_plan.tco)
    plans = {"next": same_cost}
    rt = _StubRunner(light_plan, 5)
    rp = replan.Replanner(rt, solver=lambda p, rate=None, alive=None: plans["next"],
                          window_s=5, min_requests=3, out=_io.StringIO())
    rt.feed(100)                                           # 20/s against a planned 5/s
    rp.check()
    # a rate drift forces the re-plan, a change with no saving would not be taken otherwise
    assert rp.events and rp.events[-1]["event"] == "replan"
    assert len(rt.applied) == 1 and rp.events[-1]["applied"] == {"event": "apply"}
    # back to the original plan at once: refused (cooldown), whatever the cost
    back = clone(light_plan)
    back.tco = dict(light_plan.tco, per_hour=light_plan.tco["per_hour"] * 0.1)
    plans["next"] = back
    rp.check()
    assert len(rt.applied) == 1
    # advisory: proposes, never applies
    rt2 = _StubRunner(light_plan, 5)
    rp2 = replan.Replanner(rt2, advisory=True, solver=lambda p, rate=None, alive=None: cheaper,
                           window_s=5, min_requests=3, out=_io.StringIO())
    rt2.feed(100)
    ev = rp2.check()
    assert ev["event"] == "replan" and ev["advisory"] and not rt2.applied


def test_remaining_fleet_is_owned(light_plan):
    import yaml

    from hetagent.runtime.replan import remaining_fleet_yaml
    doc = yaml.safe_load(remaining_fleet_yaml(light_plan, {"local-cpu": 1.0, "h100": 0.0}))
    assert doc["mode"] == "owned" and [d["id"] for d in doc["devices"]] == ["local-cpu"]
    with pytest.raises(HetagentError):
        remaining_fleet_yaml(light_plan, {})


def test_cli_registration_and_bad_arguments():
    import argparse

    from hetagent.runtime.commands import _endpoints, _real, add_commands
    ap = argparse.ArgumentParser()
    add_commands(ap.add_subparsers(dest="cmd"))
    a = ap.parse_args(["run", "p.json", "--requests", "3", "--concurrency", "2", "--json"])
    assert (a.requests, a.concurrency, a.json, a.rate, a.standin) == (3, 2, True, None, "auto")
    with pytest.raises(SystemExit):
        ap.parse_args(["run", "p.json", "--rate", "1", "--concurrency", "2"])
    a = ap.parse_args(["serve", "p.json", "--port", "9000"])
    assert a.port == 9000 and a.host == "127.0.0.1"
    with pytest.raises(HetagentError, match="PATTERN=URL"):
        _endpoints(["answer.*"])
    with pytest.raises(HetagentError, match="http://"):
        _endpoints(["answer.*=localhost:8000"])
    with pytest.raises(HetagentError, match="device ids"):
        _real(",")
