"""Build a Workflow in Python: the same object a YAML file gives, checked the same way.

    b = WorkflowBuilder("voice_agent", sla_ms=2500, percentile=95, rate=2)
    b.input("audio", audio_seconds=6)
    b.speech_to_text("stt", model="whisper-large-v3", inputs=["audio"])
    with b.loop("agent", expected_iterations=1.5, max_iterations=3, inputs=["stt"]) as body:
        body.llm("think", model="llama-3-8b", prompt_tokens=512, output_tokens=128)
        body.tool("search", latency_ms=300, inputs=["think"])
    b.text_to_speech("tts", inputs=["agent"])
    b.output("out", inputs=["tts"])
    wf = b.build()

Each method takes the node's YAML fields as keyword arguments.
"""
from __future__ import annotations

from contextlib import contextmanager

import yaml

from hetagent.workflow import loader


class _Scope:
    def __init__(self):
        self.nodes: list[dict] = []

    def _add(self, kind: str, id: str, **fields) -> "_Scope":
        node = {"id": id, "kind": kind}
        node.update({k: v for k, v in fields.items() if v is not None})
        self.nodes.append(node)
        return self

    def input(self, id, **f): return self._add("input", id, **f)
    def output(self, id, **f): return self._add("output", id, **f)
    def speech_to_text(self, id, **f): return self._add("speech_to_text", id, **f)
    def text_to_speech(self, id, **f): return self._add("text_to_speech", id, **f)
    def llm(self, id, **f): return self._add("llm", id, **f)
    def embed(self, id, **f): return self._add("embed", id, **f)
    def memory_search(self, id, **f): return self._add("memory_search", id, **f)
    def memory_load(self, id, **f): return self._add("memory_load", id, **f)
    def memory_store(self, id, **f): return self._add("memory_store", id, **f)
    def tool(self, id, **f): return self._add("tool", id, **f)
    def code(self, id, **f): return self._add("code", id, **f)
    def subagent(self, id, **f): return self._add("subagent", id, **f)

    @contextmanager
    def loop(self, id, *, expected_iterations, max_iterations, **f):
        body = _Scope()
        yield body
        self._add("loop", id, expected_iterations=expected_iterations,
                  max_iterations=max_iterations, body=body.nodes, **f)

    @contextmanager
    def branch(self, id, **f):
        arms = _Arms()
        yield arms
        self._add("branch", id, arms=arms.arms, **f)


class _Arms:
    def __init__(self):
        self.arms: list[dict] = []

    @contextmanager
    def arm(self, name: str, probability: float):
        scope = _Scope()
        yield scope
        self.arms.append({"name": name, "probability": probability, "nodes": scope.nodes})


class WorkflowBuilder(_Scope):
    def __init__(self, name: str, *, sla_ms: float | None = None, percentile: float = 95.0,
                 sla_iterations: int | None = None, rate: float = 1.0, description: str | None = None):
        super().__init__()
        self.header: dict = {"name": name, "rate": rate}
        if description:
            self.header["description"] = description
        if sla_ms is not None:
            sla = {"latency_ms": sla_ms, "percentile": percentile}
            if sla_iterations is not None:
                sla["iterations"] = sla_iterations
            self.header["sla"] = sla

    def to_dict(self) -> dict:
        return {**self.header, "nodes": self.nodes}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def build(self, config_dir=None):
        """Validate exactly as a file would be; errors point into the equivalent YAML."""
        return loader.loads(self.to_yaml(), file=f"<builder {self.header['name']}>",
                            config_dir=config_dir)
