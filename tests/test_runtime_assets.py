"""ISSUE 9 in the runtime: `hetagent run plan.json --assets DIR` runs operators with a `built` llvm-cpu
asset through the compiled executable instead of the eager model (embed.encode through
hetagent.backends.codegen.CompiledEmbedder), and the run report says which ones did."""
import json

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.models, pytest.mark.slow]
ray = pytest.importorskip("ray")
pytest.importorskip("iree.runtime")
pytest.importorskip("iree.compiler")
pytest.importorskip("torch_mlir")

RAG = """
name: ragmini
sla: {latency_ms: 5000, percentile: 95}
rate: 2
nodes:
  - {id: q, kind: input, text_tokens: 16}
  - {id: retrieve, kind: memory_search, index_size: 400, top_k: 3, embed_model: all-minilm-l6-v2,
     query_tokens: 24, result_tokens: 96, inputs: [q]}
  - {id: out, kind: output, inputs: [retrieve]}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory, serve_instance):
    from hetagent import api
    from hetagent.backends.codegen import build_from_plan
    d = tmp_path_factory.mktemp("rag")
    (d / "rag.yaml").write_text(RAG)
    plan = api.plan(str(d / "rag.yaml"), fleet="local-cpu").to_json()
    (d / "plan.json").write_text(json.dumps(plan))
    m = build_from_plan(d / "plan.json", d / "assets", targets=["llvm-cpu"])
    e = [a for a in m["assets"] if a["operator"] == "retrieve.embed" and a["target"] == "llvm-cpu"]
    assert e and e[0]["status"] == "built", m["assets"]
    yield d


def test_run_uses_the_compiled_embedder(built):
    from hetagent.runtime.commands import deploy, drive
    from hetagent.runtime.metrics import format_summary
    q = {"text": "how are operators placed on devices?", "question": "how are operators placed on devices?"}
    outs = {}
    for assets in (str(built / "assets"), None):
        rt = deploy(str(built / "plan.json"), assets=assets)
        try:
            res = rt.call(q, timeout=120)
            assert res["status"] == "completed", res["error"]
            outs[assets is not None] = res["output"]["passages"]
            assert bool(rt.metrics.compiled_calls) == (assets is not None)
            if assets is None:
                continue
            s = drive(rt, requests=2, concurrency=1)
            assert s["completed"] == 3 and s["lost"] == 0, s["errors"]
            assert list(s["compiled"]) == ["retrieve.embed"] and "llvm-cpu" in s["compiled"]["retrieve.embed"]
            assert s["compiled_calls"] == {"retrieve.embed": 3}      # every call ran the executable
            assert "compiled: retrieve.embed" in format_summary(s)
        finally:
            rt.close()
    # the compiled vectors retrieve what eager MiniLM retrieves (same weights, within 1e-4)
    assert outs[True] == outs[False] and len(outs[True]) == 3


def test_assets_dir_without_manifest_is_a_clear_error(built, tmp_path):
    from hetagent.errors import HetagentError
    from hetagent.runtime.commands import run
    with pytest.raises(HetagentError, match="manifest.json"):
        run(str(built / "plan.json"), requests=1, assets=str(tmp_path))
