"""The interface every importer keeps: it returns an `Imported` (native workflow data, where each number
came from, warnings, a summary), and `render` writes it as workflow YAML with that provenance in
comments: a header on top, and above each node the lines that explain its numbers.

    imp = traces.import_traces(["spans.jsonl"])
    text = render(imp)          # validated exactly as `hetagent compile` would load it
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hetagent.workflow.importers.common import ordered


@dataclass
class Imported:
    format: str                                   # dify, langgraph, traces
    data: dict                                    # the native workflow (name, rate, nodes, ...)
    header: list[str]                             # comment lines for the top of the YAML
    notes: dict[str, list[str]] = field(default_factory=dict)   # node id -> comment lines above it
    warnings: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)   # the --json summary, less `workflow`
    base_dir: Path | None = None                  # where relative sub-agent files resolve


def render(imp: Imported, *, file: str = "<import>", config_dir=None) -> str:
    """The workflow YAML of an import, checked by the loader (schema, ids, references, model ids)
    before it is returned; a failure is a WorkflowError naming the line of this YAML."""
    from hetagent.workflow import loader
    body = yaml.safe_dump(ordered(imp.data), sort_keys=False, allow_unicode=True, width=100)
    text = "\n".join(comment_lines(imp.header)) + "\n" + with_node_notes(body, imp.notes)
    loader.loads(text, file=file, base_dir=imp.base_dir or Path("."), config_dir=config_dir)
    return text


def comment_lines(lines: list[str], indent: str = "") -> list[str]:
    out = []
    for ln in lines:
        for part in str(ln).splitlines() or [""]:
            out.append(f"{indent}# {part}".rstrip())
    return out


_NODE_LINE = re.compile(r"^(\s*)- id: (.+)$")


def with_node_notes(body: str, notes: dict[str, list[str]]) -> str:
    """Insert each node's comment lines right above its `- id:` line (ids are unique per document)."""
    if not notes:
        return body
    out = []
    for line in body.splitlines():
        m = _NODE_LINE.match(line)
        if m:
            nid = m.group(2).strip().strip("'\"")
            if notes.get(nid):
                out += comment_lines(notes[nid], m.group(1))
        out.append(line)
    return "\n".join(out) + "\n"


def counts(data: dict) -> dict:
    """Nodes of each kind in a native workflow, every level (inline sub-agents included)."""
    out: dict[str, int] = {}

    def rec(nodes):
        for n in nodes:
            out[n["kind"]] = out.get(n["kind"], 0) + 1
            if n["kind"] == "loop":
                rec(n["body"])
            elif n["kind"] == "branch":
                for a in n["arms"]:
                    rec(a["nodes"])
            elif n["kind"] == "subagent" and isinstance(n.get("inline"), dict):
                rec(n["inline"]["nodes"])
    rec(data["nodes"])
    return out
