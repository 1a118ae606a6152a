import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
WORKFLOWS = sorted((ROOT / "configs" / "workflows").glob("*.yaml"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture
def root() -> Path:
    return ROOT


# A light workflow for the runtime and deploy tests: a loopback tool and sandboxed code, no model loads.
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


_SERVE: dict = {}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def serve_instance():
    """One embedded Ray with Ray Serve for the runtime tests (Serve's start-up is slow, so it is shared):
    every catalog device and local-cpu advertised as resources, Serve's HTTP proxy on a free loopback
    port (yielded). Started again if a test shut Ray down (the two-node cluster test does)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.serve")
    if not ray.is_initialized() or _SERVE.get("node") != ray.get_runtime_context().get_node_id():
        from hetagent.costmodel.devices import load_catalog
        from hetagent.runtime.deploy import ray_init, serve_start
        if ray.is_initialized():
            ray.shutdown()
        devices = {d: 8 for d in load_catalog()} | {"local-cpu": 1}
        ray_init(None, devices)
        _SERVE["port"] = free_port()
        serve_start({"host": "127.0.0.1", "port": _SERVE["port"]})
        _SERVE["node"] = ray.get_runtime_context().get_node_id()
    yield _SERVE["port"]


def pytest_sessionfinish(session, exitstatus):
    """Ray (and what it holds) is shut down while the interpreter is whole: a CI run once ended in a
    segmentation fault after every test had passed, at interpreter exit."""
    import gc
    import sys
    if "ray" in sys.modules:
        import ray
        if ray.is_initialized():
            ray.shutdown()
    gc.collect()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """pytest's faulthandler is off by now; a crash at interpreter exit still prints where it happened."""
    import faulthandler
    import sys
    faulthandler.enable(file=sys.__stderr__, all_threads=True)
