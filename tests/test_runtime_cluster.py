"""A real two-node Ray cluster on this machine (Ray's own cluster utilities: a head and a worker
node process, each advertising different device ids). A plan runs on Ray Serve across both; the
worker is removed mid-run; the slow path re-plans on what remains, applies the new plan
make-before-break, and no request is lost."""
import time

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ray = pytest.importorskip("ray")

LIGHT = """
name: light
sla: {latency_ms: 8000, percentile: 95}
rate: 5
nodes:
  - {id: q, kind: input, text_tokens: 16}
  - {id: search, kind: tool, tool: loopback_search, latency_ms: 5, inputs: [q]}
  - {id: glue, kind: code, cpu_ms: 1, inputs: [search, q]}
  - {id: out, kind: output, inputs: [glue]}
"""


def test_two_nodes_worker_lost_replans_no_request_lost(tmp_path):
    import io

    from ray.cluster_utils import Cluster

    from hetagent import api
    from hetagent.runtime.commands import deploy
    from hetagent.runtime.load import request_input
    from hetagent.runtime.replan import Replanner
    wf = tmp_path / "light.yaml"
    wf.write_text(LIGHT)
    plan = api.plan(str(wf), fleet="local-cpu").to_json()
    for pl in plan["placements"]:                 # the tool half on the worker's device
        if pl["operator"].startswith("search."):
            pl["device"] = "l4"
    for q in plan["pools"]:
        if any(o.startswith("search.") for o in q["operators"]):
            q["device"] = "l4"
    plan["fleet"]["l4"] = 1
    if ray.is_initialized():
        ray.shutdown()
    mb = 80 << 20
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"local-cpu": 1}, "object_store_memory": mb,
        "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1, resources={"l4": 1}, object_store_memory=mb)
    rt = None
    try:
        rt = deploy(plan, address=cluster.address, admission=False)   # every request must complete
        nodes = {a["NodeID"] for a in ray.nodes() if a["Alive"]}
        assert len(nodes) == 2
        assert rt.d.emulated_ops() == ["search.compute", "search.lookup"]
        assert rt.d.started_ray is False
        out = io.StringIO()
        rp = Replanner(rt, interval_s=0.5, drift=1e9, out=out).start()   # fleet changes only
        payload = request_input(rt.d.graph, "two nodes")
        futs = [rt.submit(payload) for _ in range(10)]
        [f.result(timeout=60) for f in futs]
        futs = []
        for i in range(30):
            futs.append(rt.submit(payload))
            if i == 10:
                cluster.remove_node(worker)       # the worker dies mid-run
            time.sleep(0.1)
        res = [f.result(timeout=180) for f in futs]
        rp.stop()
        st = [r["status"] for r in res]
        assert st.count("completed") == 30, [r["error"] for r in res if r["status"] != "completed"]
        s = rt.report()
        assert s["requests"] == 40 and s["lost"] == 0 and s["completed"] == 40
        ev = [e for e in rp.events if e["event"] == "replan"]
        assert ev and "l4" in ev[0]["reason"] and ev[0]["fleet"] == {"local-cpu": 1}
        assert ev[0]["applied"]["switched_after_ready"] and ev[0]["applied"]["started"]
        assert {rt.d.graph.operators[n].device for n in rt.d.graph.operators} == {"local-cpu"}
        assert rt.d.emulated_ops() == []
        assert "replan" in out.getvalue()
    finally:
        if rt is not None:
            rt.close()
        ray.shutdown()
        cluster.shutdown()
