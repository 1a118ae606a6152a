"""The Dify importer's defaults: what a Dify export does not record (token counts, latencies, loop
counts), the values used instead. dify.py's docstring and docs/dify.md explain each; `hetagent import
dify` lists every one it used in the header of the YAML it writes."""
from __future__ import annotations

import re

KNOWN_VERSION = (0, 6)  # newest DSL minor version whose forms this importer knows

# token and size defaults (module docstring)
VAR_TOKENS = 200
QUERY_TOKENS = 64
CONTEXT_TOKENS = 1024
HISTORY_TOKENS_PER_TURN = 200
MEMORY_TURNS = 10
IMAGE_TOKENS = 765
OUTPUT_TOKENS = 512
CLASSIFIER_OUTPUT_TOKENS = 32
FAIL_PROBABILITY = 0.05
ITERATION_ITEMS = 3
ITERATION_MAX = 10
PARALLEL_NUMS = 10
LOOP_MAX = 10
AGENT_MAX = 3
AGENT_CHAT_MAX = 5
AGENT_EXPECTED = 2
TOOL_LATENCY_MS = 800.0
WORKFLOW_TOOL_LATENCY_MS = 3000.0
HTTP_LATENCY_MS = 300.0
INDEX_SIZE = 100_000
TOP_K = 4
FILE_BYTES = 1 << 20
CPU_MS = {"code": 20.0, "template-transform": 20.0, "document-extractor": 50.0}
CPU_MS_OTHER = 1.0
CPU_MS_UNKNOWN = 5.0
STT_MODEL = "whisper-large-v3"

_REF_RE = re.compile(r"\{\{#([^#{}]+?)#\}\}")
_MARKERS = ("iteration-start", "loop-start", "loop-end")
_CONTAINERS = ("iteration", "loop")
_SYS = ("sys", "env", "conversation", "context", "rag")
_CPU_TYPES = ("code", "template-transform", "variable-aggregator", "variable-assigner", "assigner",
              "document-extractor", "list-operator")


def _version(v) -> tuple[int, ...] | None:
    if v is None:
        return None
    m = re.match(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(v))
    return tuple(int(x or 0) for x in m.groups()) if m else None
