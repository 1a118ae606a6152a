"""YAML read safely, with the line of every value kept for error messages.

Only plain data is accepted: mappings, sequences, strings, numbers, booleans and null. Custom tags
(`!!python/object`, `!foo`) are refused, never constructed. Anchors and aliases are allowed but the
document's expanded size is measured on the node graph before anything is expanded, so an alias bomb
("billion laughs") is refused in linear time and memory.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from hetagent.errors import InputError

MAX_EXPANDED_NODES = 200_000
_PLAIN_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq", "tag:yaml.org,2002:timestamp",
}
_SCALARS = yaml.SafeLoader.yaml_constructors  # the safe scalar constructors, used per tag
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: same nodes, 10x faster


class Located:
    """Parsed data plus the line (1-based) of every path in it: lines[("nodes", 2, "model")] = 14."""

    def __init__(self, data, lines: dict[tuple, int], file: str):
        self.data, self.lines, self.file = data, lines, file

    def line_of(self, path: tuple) -> int | None:
        """The line of the longest prefix of `path` that exists in the document."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def read_text(path: str | Path) -> str:
    """A workflow file's text through the one guarded reader (hetagent.guarded: size, binary, UTF-8)."""
    from hetagent.guarded import read_text as guarded_read
    return guarded_read(path, "workflow")


def load(text: str, file: str) -> Located:
    """Parse one YAML (or JSON) document into plain data with line numbers."""
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise InputError(f"YAML syntax error: {e.problem or e.context}", file=file, line=line) from None
    except yaml.YAMLError as e:  # reader errors: control characters and the like
        raise InputError(f"YAML error: {str(e).splitlines()[0]}", file=file) from None
    except RecursionError:
        raise InputError("YAML nested too deeply", file=file) from None
    if node is None:
        raise InputError("the file is empty", file=file)
    if "&" in text:          # aliases need an anchor (`&name`): without one nothing can expand
        _refuse_bombs(node, file)
    lines: dict[tuple, int] = {}
    data = _construct(node, (), lines, file, yaml.constructor.SafeConstructor())
    return Located(data, lines, file)


def _compose(text: str):
    """libyaml first (fast); the pure-Python parser where libyaml refuses what YAML allows, such as
    JSON surrogate-pair escapes (Dify's API exports write emoji that way)."""
    try:
        return yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError:
        if _LOADER is yaml.SafeLoader:
            raise
        return yaml.compose(text, Loader=yaml.SafeLoader)


def _refuse_bombs(root, file: str) -> None:
    """Expanded node count, memoized per node object: aliases share node objects."""
    sizes: dict[int, int] = {}
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not done:
            if any(id(c) not in sizes for c in children):
                stack.append((node, True))
                stack.extend((c, False) for c in children if id(c) not in sizes)
                continue
        total = 1 + sum(sizes.get(id(c), 0) for c in children)
        if total > MAX_EXPANDED_NODES:
            raise InputError(
                f"document expands to more than {MAX_EXPANDED_NODES} values (alias bomb?); refused",
                file=file, line=node.start_mark.line + 1)
        sizes[id(node)] = total


def _children(node):
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _construct(node, path: tuple, lines: dict, file: str, scalars):
    lines[path] = node.start_mark.line + 1
    if node.tag not in _PLAIN_TAGS:
        raise InputError(f"tag '{node.tag}' is not allowed (only plain data)", file=file,
                         line=node.start_mark.line + 1, field=_dotted(path) or None)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for k_node, v_node in node.value:
            if k_node.tag == "tag:yaml.org,2002:merge":
                raise InputError("merge keys (<<) are not supported", file=file,
                                 line=k_node.start_mark.line + 1)
            key = _construct(k_node, path + ("<key>",), {}, file, scalars)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise InputError("mapping keys must be plain scalars", file=file,
                                 line=k_node.start_mark.line + 1)
            key = str(key)
            if key in out:
                raise InputError(f"duplicate key '{key}'", file=file, line=k_node.start_mark.line + 1,
                                 field=_dotted(path + (key,)))
            out[key] = _construct(v_node, path + (key,), lines, file, scalars)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path + (i,), lines, file, scalars) for i, v in enumerate(node.value)]
    try:
        return _SCALARS[node.tag](scalars, node)
    except (ValueError, yaml.YAMLError) as e:
        raise InputError(f"bad value: {e}", file=file, line=node.start_mark.line + 1,
                         field=_dotted(path) or None) from None


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def dotted(path: tuple) -> str:
    return _dotted(path)


def to_json(data) -> str:
    return json.dumps(data, sort_keys=True)
