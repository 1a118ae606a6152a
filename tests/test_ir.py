"""The IR: printing round-trips, upstream MLIR verifies it through the shipped IRDL, and each pass does
what its docstring says."""
import shutil
import subprocess
import sys

import pytest

import hetagent
from hetagent.errors import IRError
from hetagent.ir import dialects as d
from hetagent.ir.opgraph import extract
from hetagent.ir.text import parse_module, print_module
from hetagent.passes.registry import run
from hetagent.passes.unroll import reach_probabilities
from hetagent.workflow.builder import WorkflowBuilder

from conftest import ROOT, WORKFLOWS

IRDL = ROOT / "hetagent" / "ir" / "agent.irdl.mlir"
PIPELINES = ["verify", "verify,decompose", "verify,decompose,unroll", "verify,decompose,unroll,fuse",
             "builtin.module(verify,unroll)"]


def kinds(module):
    return [op.name for op in module.walk()]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
@pytest.mark.parametrize("passes", PIPELINES)
def test_print_parse_print_is_identical(path, passes):
    module = hetagent.compile(path, passes=passes)
    for generic in (False, True):
        text = print_module(module, generic=generic)
        assert print_module(parse_module(text), generic=generic) == text


def test_shipped_irdl_is_generated_from_the_dialects():
    assert IRDL.read_text() == d.irdl_text(), "regenerate: python -m hetagent.ir.irdl"


def _iree_opt():
    exe = shutil.which("iree-opt")
    if exe is None:
        pytest.skip("iree-opt (iree-base-compiler) is not installed")
    return exe


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
@pytest.mark.parametrize("passes", ["verify", "verify,decompose,unroll,fuse"])
def test_upstream_mlir_verifies_generic_form(tmp_path, path, passes):
    exe = _iree_opt()
    mlir = tmp_path / "m.mlir"
    mlir.write_text(hetagent.to_mlir(hetagent.compile(path, passes=passes), generic=True))
    r = subprocess.run([exe, f"--irdl-file={IRDL}", str(mlir), "-o", str(tmp_path / "out.mlir")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[:2000]


def test_upstream_mlir_rejects_ill_formed_ir(tmp_path):
    exe = _iree_opt()
    text = hetagent.to_mlir(hetagent.compile(ROOT / "configs/workflows/rag_chat.yaml", passes="verify"),
                            generic=True)
    bad = text.replace('"memory.load"(%0) {node = "history", bytes', '"memory.load"(%0) {node = "history", bites', 1)
    assert bad != text
    mlir = tmp_path / "bad.mlir"
    mlir.write_text(bad)
    r = subprocess.run([exe, f"--irdl-file={IRDL}", str(mlir)], capture_output=True, text=True)
    assert r.returncode != 0 and "bytes" in r.stderr


def _voice():
    return hetagent.load(ROOT / "configs/workflows/voice_agent.yaml")


def test_decompose_splits_llm_tool_and_speech():
    m = hetagent.compile(_voice(), passes="verify,decompose")
    names = kinds(m)
    for gone in ("llm.call", "tool.invoke", "speech.stt", "speech.tts"):
        assert gone not in names
    for made in ("llm.prefill", "llm.kv_transfer", "llm.decode", "tool.lookup", "tool.compute",
                 "speech.frontend", "speech.encode", "speech.decode", "speech.phonemize",
                 "speech.synthesize"):
        assert made in names
    prefill = next(op for op in m.walk() if op.name == "llm.prefill")
    # Llama 3 8B: 128 KiB of KV cache per token in fp16 (REFERENCE.md), 512 prompt tokens.
    assert isinstance(prefill.results[0].type, d.KvType)
    assert prefill.results[0].type.sizes() == (512, 512 * 128 * 1024)
    assert prefill.attributes["ttft_ms"].value.data == 250


def test_decompose_moe_has_figure_7_structure():
    b = WorkflowBuilder("moe")
    b.input("q", text_tokens=100)
    b.llm("ask", model="mixtral-8x7b", prompt_tokens=1000, output_tokens=100, inputs=["q"])
    m = hetagent.compile(b.build(), passes="decompose")
    seq = [op.name for op in m.walk() if op.name.split(".")[0] in ("expert", "comm", "llm")]
    assert seq == ["expert.gate", "expert.tp_prefill", "expert.merge", "comm.allreduce",
                   "llm.kv_transfer", "expert.gate", "expert.tp_decode", "expert.merge", "comm.allreduce"]
    gate = next(op for op in m.walk() if op.name == "expert.gate")
    assert d.op_attrs(gate)["experts"] == 8 and d.op_attrs(gate)["top_k"] == 2


def test_decompose_memory_search_with_rerank():
    m = hetagent.compile(ROOT / "configs/workflows/rag_chat.yaml", passes="decompose")
    seq = [op.name for op in m.walk() if op.name.startswith(("embed", "memory"))]
    assert seq == ["memory.load", "embed.encode", "memory.vector_search", "memory.rerank", "memory.store"]


def test_unroll_copies_with_geometric_reach():
    m = hetagent.compile(_voice(), passes="decompose,unroll")
    assert "scf.while" not in kinds(m)
    g = extract(m)
    prefills = [o for o in g.operators if o.name.endswith("think.prefill")]
    assert [o.name for o in prefills] == [f"agent.it{k}.think.prefill" for k in (1, 2, 3)]
    assert sum(o.weight for o in prefills) == pytest.approx(1.5, rel=1e-6)
    assert prefills[0].weight == 1.0 and prefills[1].weight > prefills[2].weight


@pytest.mark.parametrize("expected,n", [(1, 3), (1.5, 3), (3, 3), (4, 8), (2.2, 10)])
def test_reach_probabilities_sum_to_expected(expected, n):
    p = reach_probabilities(expected, n)
    assert len(p) == n and p[0] == 1.0
    assert sum(p) == pytest.approx(expected, rel=1e-6)
    assert all(a >= b for a, b in zip(p, p[1:]))


def test_unroll_sla_iterations_marks_the_path():
    wf = hetagent.load(ROOT / "configs/workflows/coding_agent.yaml")  # sla iterations 6 of 8
    g = extract(hetagent.compile(wf))
    on = {o.name.split(".")[1] for o in g.operators if o.on_sla_path and o.name.startswith("react.")}
    off = {o.name.split(".")[1] for o in g.operators if not o.on_sla_path}
    assert on == {f"it{k}" for k in range(1, 7)} and off == {"it7", "it8"}


def test_branch_arms_are_weighted_by_probability():
    g = extract(hetagent.compile(ROOT / "configs/workflows/coding_agent.yaml"))
    first = {o.name: o.weight for o in g.operators if o.name.startswith("react.it1.")}
    assert first["react.it1.sandbox.lookup"] == pytest.approx(0.5)
    assert first["react.it1.repo_search.search"] == pytest.approx(0.35)


def test_fuse_merges_cpu_chain_and_keeps_parallel_ops():
    before = hetagent.compile(ROOT / "configs/workflows/coding_agent.yaml", passes="decompose,unroll")
    after = hetagent.compile(ROOT / "configs/workflows/coding_agent.yaml")
    fused = [op for op in after.walk() if op.name == "compute.fused"]
    assert fused, "tool.compute -> compute.code in the sandbox arm should fuse"
    f = fused[0]
    parts = d.op_attrs(f)["parts"]
    assert parts[0].endswith("sandbox.compute") and parts[1].endswith("parse_output")
    assert d.op_attrs(f)["cpu_ms"] == pytest.approx(25)
    assert len(list(before.walk())) > len(list(after.walk()))
    # llm and tool lookups are never fused
    assert sum(op.name == "tool.lookup" for op in after.walk()) == sum(
        op.name == "tool.lookup" for op in before.walk())


def test_subagents_are_functions_and_inlined_in_the_operator_graph():
    m = hetagent.compile(ROOT / "configs/workflows/deep_research.yaml")
    funcs = [op.sym_name.data for op in m.ops]
    assert funcs == ["deep_research", "researcher", "fact_checker"]
    g = extract(m)
    names = {o.name for o in g.operators}
    assert "research_a.summarize.prefill" in names and "research_b.summarize.prefill" in names
    # the three researchers run in parallel: all consume the planner, the writer consumes all three
    writer_inputs = {a for a, b in g.edges if b == "write.prefill"}
    assert {"research_a.summarize.decode", "research_b.summarize.decode"} <= writer_inputs
    assert any(x.startswith("research_c.") for x in writer_inputs)


def test_verify_rejects_negative_sizes_and_unknown_callee():
    text = hetagent.to_mlir(hetagent.compile(ROOT / "configs/workflows/rag_chat.yaml", passes="verify"))
    with pytest.raises(IRError, match="must be >= 0"):
        run(parse_module(text.replace("bytes = 16384", "bytes = -3")), "verify")
    sub = hetagent.to_mlir(hetagent.compile(ROOT / "configs/workflows/deep_research.yaml", passes="verify"))
    with pytest.raises(IRError):
        run(parse_module(sub.replace("call @researcher(", "call @nobody(")), "verify")


def test_verify_rejects_heterogeneous_operands():
    a = d.make("agent.input", "a", [], d.text(3), text_tokens=3, audio_ms=0, bytes=0)
    b = d.make("agent.input", "b", [], d.data(8), text_tokens=0, audio_ms=0, bytes=8)
    c = d.make("compute.code", "c", [a.results[0], b.results[0]], d.data(1), cpu_ms=1.0)
    from xdsl.dialects.builtin import ModuleOp
    from xdsl.utils.exceptions import VerifyException
    with pytest.raises(VerifyException, match="share one type"):
        ModuleOp([a, b, c]).verify()


def test_parse_errors_are_one_line(tmp_path):
    with pytest.raises(IRError) as e:
        parse_module("builtin.module { %0 = \"llm.prefill\"() : () -> }", "x.mlir")
    assert "\n" not in str(e.value) and "x.mlir" in str(e.value)


def test_cli_compile_prints_only_mlir_and_writes_file(tmp_path):
    wf = ROOT / "configs/workflows/voice_agent.yaml"
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "compile", str(wf)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout.startswith("builtin.module {")
    parse_module(r.stdout)
    out = tmp_path / "voice.mlir"
    r = subprocess.run([sys.executable, "-m", "hetagent.cli", "compile", str(wf), "-o", str(out),
                        "--generic"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "" and out.read_text().startswith('"builtin.module"()')


def test_plan_input_may_be_compiled_mlir(tmp_path):
    out = tmp_path / "v.mlir"
    out.write_text(hetagent.to_mlir(hetagent.compile(ROOT / "configs/workflows/voice_agent.yaml",
                                                     passes="verify")))
    g = hetagent.operator_graph(out)
    assert any(o.kind == "llm.decode" for o in g.operators) and g.sla_ms == 3000


CODE_WF = """
name: code
nodes:
  - {id: q, kind: input, text_tokens: 8}
  - {id: a, kind: code, cpu_ms: 2, inputs: [q]}
  - id: b
    kind: code
    inputs: [a]
    source: "def main(text):\\n    return {'text': \\"it's \\" + text}\\n"
  - {id: c, kind: code, cpu_ms: 3, inputs: [b]}
"""


def test_code_source_survives_mlir_and_is_never_fused(tmp_path):
    f = tmp_path / "code.yaml"
    f.write_text(CODE_WF)
    m = hetagent.compile(f)
    text = print_module(m)
    again = parse_module(text, "<test>")
    assert print_module(again) == text
    ops = {d.op_attrs(op).get("source"): op.name for op in again.walk() if op.name.startswith("compute.")}
    assert ops["def main(text):\n    return {'text': \"it's \" + text}\n"] == "compute.code"
    names = [op.attributes["node"].data for op in m.walk() if op.name.startswith("compute.")]
    assert names == ["a", "b", "c"]     # b has source: a, b and c stay apart


def test_long_cpu_chain_fuses_in_one_op():
    b = WorkflowBuilder("chain")
    b.input("q", text_tokens=8)
    prev = "q"
    for i in range(300):
        b.code(f"c{i}", cpu_ms=1, inputs=[prev])
        prev = f"c{i}"
    fused = [op for op in hetagent.compile(b.build()).walk() if op.name == "compute.fused"]
    assert len(fused) == 1 and len(d.op_attrs(fused[0])["parts"]) == 300
    assert d.op_attrs(fused[0])["cpu_ms"] == pytest.approx(300)


@pytest.mark.parametrize("expected,n,sla", [(1.5, 10**9, None), (1e8, 10**9, None), (2.0, 2_000_000, 5)])
def test_huge_loop_folds_its_tail_and_keeps_the_expected_cost(expected, n, sla):
    b = WorkflowBuilder("big", sla_ms=10_000 if sla else None, sla_iterations=sla)
    b.input("q", text_tokens=8)
    with b.loop("L", expected_iterations=expected, max_iterations=n, inputs=["q"]) as body:
        body.tool("t", latency_ms=5)
    g = extract(hetagent.compile(b.build()))
    lookups = [o for o in g.operators if o.kind == "tool.lookup"]
    assert len(lookups) <= 1001
    assert sum(o.weight for o in lookups) == pytest.approx(expected, rel=1e-6)
    on_path = [o for o in lookups if o.on_sla_path]
    assert len(on_path) == (sla or len(lookups) - 1)
    assert not lookups[-1].on_sla_path       # the folded tail is never on the SLA path


def test_loop_with_too_many_sla_iterations_is_refused_with_its_line(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text("name: w\nsla: {latency_ms: 1000}\nnodes:\n  - {id: q, kind: input}\n"
                 "  - {id: L, kind: loop, expected_iterations: 2, max_iterations: 1000000000, inputs: [q],"
                 " body: [{id: t, kind: code}]}\n")
    with pytest.raises(hetagent.errors.InputError, match=r"big.yaml:5: field 'nodes\[1\].max_iterations'"
                       r".*at most 1000"):
        hetagent.load(f)


def test_nested_huge_loops_are_refused_not_materialized():
    b = WorkflowBuilder("nest")
    b.input("q", text_tokens=8)
    with b.loop("outer", expected_iterations=5e8, max_iterations=10**9, inputs=["q"]) as o:
        with o.loop("inner", expected_iterations=5e8, max_iterations=10**9) as i:
            i.tool("t", latency_ms=5)
    with pytest.raises(IRError, match="would pass 200000 operations"):
        hetagent.compile(b.build())
# ---- distributions, growing context, prefix reuse ------------------------------------------------------

def _agent(growth="auto", shared=None, iterations=None):
    b = WorkflowBuilder("agent", sla_ms=20000)
    b.input("q", text_tokens=10)
    extra = {"prefix_shared": shared} if shared is not None else {}
    with b.loop("loop", expected_iterations=iterations or 2.5, max_iterations=4, inputs=["q"],
                context_growth_tokens=growth) as body:
        body.llm("a", model="llama-3-8b", prompt_tokens={"mean": 1000, "p50": 800, "p95": 2000},
                 output_tokens=100, **extra)
        with body.branch("act", inputs=["a"]) as arms:
            with arms.arm("tool", 0.5) as arm:
                arm.tool("t", latency_ms={"mean": 1000, "p50": 800, "p99": 4000}, result_tokens=300, cpu_ms=2)
            with arms.arm("think", 0.5):
                pass
    return b.build()


def test_growing_context_and_prefix_per_copy():
    g = extract(hetagent.compile(_agent()))
    pre = {o.name: o for o in g.operators if o.kind == "llm.prefill"}
    growth = 100 + 0.5 * 300                    # auto: the output and the tool result, by arm probability
    for k in (1, 2, 3, 4):
        p = pre[f"loop.it{k}.a.prefill"].attrs
        assert p["prompt_tokens"] == round(1000 + (k - 1) * growth)
        assert p["prefix_tokens"] == (0 if k == 1 else round(1000 + (k - 2) * growth + 100))
        assert p.get("retain_ms", 0) == (0 if k == 1 else pytest.approx(0.5 * 1002))
    kv = next(o for o in g.operators if o.name == "loop.it3.a.kv_transfer").attrs
    first = next(o for o in g.operators if o.name == "loop.it1.a.kv_transfer").attrs
    assert kv["tokens"] == 1500 and kv["kv_bytes"] == pytest.approx(first["kv_bytes"] * 1.5, rel=1e-6)
    assert kv["bytes_out"] == kv["kv_bytes"]            # the result type grew with it
    dec = next(o for o in g.operators if o.name == "loop.it4.a.decode").attrs
    assert dec["prompt_tokens"] == 1750
    from hetagent.workflow.dist import from_attr
    assert from_attr(dec["prompt_dist"]).mean == pytest.approx(1750, rel=1e-6)


def test_no_growth_no_prefix_and_explicit_opt_out():
    g = extract(hetagent.compile(_agent(growth=None)))
    assert {o.attrs["prompt_tokens"] for o in g.operators if o.kind == "llm.prefill"} == {1000}
    assert not any("prefix_tokens" in o.attrs for o in g.operators)
    g = extract(hetagent.compile(_agent(shared=False)))
    pre = [o for o in g.operators if o.kind == "llm.prefill"]
    assert [o.attrs["prompt_tokens"] for o in pre] == [1000, 1250, 1500, 1750]
    assert not any("prefix_tokens" in o.attrs for o in pre)


def test_iteration_histogram_sets_the_reach_of_each_copy():
    wf = _agent(iterations={"histogram": [[1, 2], [3, 1], [4, 1]]})
    g = extract(hetagent.compile(wf))
    w = [o.weight for o in g.operators if o.kind == "llm.prefill"]
    assert w == pytest.approx([1.0, 0.5, 0.5, 0.25])


def test_unroll_before_decompose_gives_the_same_operators():
    a = extract(hetagent.compile(_agent(), passes="verify,decompose,unroll"))
    b = extract(hetagent.compile(_agent(), passes="verify,unroll,decompose"))
    key = lambda g: sorted((o.name, o.kind, tuple(sorted((k, str(v)) for k, v in o.attrs.items())))  # noqa: E731
                           for o in g.operators)
    assert key(a) == key(b)


def test_upstream_mlir_verifies_distributions_and_prefixes(tmp_path):
    exe = _iree_opt()
    mlir = tmp_path / "m.mlir"
    mlir.write_text(hetagent.to_mlir(hetagent.compile(_agent()), generic=True))
    assert "prompt_dist" in mlir.read_text() and "prefix_tokens" in mlir.read_text()
    r = subprocess.run([exe, f"--irdl-file={IRDL}", str(mlir), "-o", str(tmp_path / "out.mlir")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[:2000]
    text = mlir.read_text().replace("prefix_tokens = 1100", "prefix_tokens = -1100", 1)
    assert "-1100" in text
    with pytest.raises(IRError, match="prefix_tokens must be >= 0"):
        parse_module(text)
