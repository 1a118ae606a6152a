"""Every file hetagent reads is read here, one guarded way: workflows, compiled .mlir, device, model,
fleet and TCO configs, profiles, plan.json, simulation.json, traces and build manifests.

- **size**: a per-kind limit, checked on the file's size before a byte is read (LIMITS);
- **text**: UTF-8 without NUL bytes, else one line naming the file (and the line of a bad byte);
- **YAML**: plain data only (no tags: `!!python/object` is refused, never constructed), no duplicate
  keys, anchors and aliases allowed but the expanded size measured on the node graph before anything
  is expanded, so an alias bomb ("billion laughs") is refused in linear time and memory;
- **JSON**: parsed by the standard library (which bounds its own recursion), nesting over
  MAX_JSON_DEPTH refused, and the line of any field found again on demand, so a schema error names
  file, line and field (JsonLocated);
- **schema**: callers validate the parsed data against their schema and raise InputError naming the
  file, line and field (pydantic models for workflows, hetagent.placement.plan_schema for plan.json,
  the config readers' checks for devices, models, fleets, TCO and profiles).
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from hetagent.errors import InputError

MiB = 1 << 20
LIMITS = {
    "workflow": 8 * MiB,        # a 10,000-node workflow is about 1 MiB
    "mlir": 64 * MiB,
    "config": 1 * MiB,          # devices, models, fleets, TCO: a few KiB each
    "profiles": 8 * MiB,
    "plan": 64 * MiB,           # embeds the placed IR and the workflow texts
    "simulation": 16 * MiB,
    "trace": 64 * MiB,
    "manifest": 16 * MiB,
}
MAX_JSON_DEPTH = 200
WHAT = {"workflow": "workflow file", "mlir": "MLIR file", "config": "config file",
        "profiles": "profile file", "plan": "plan.json", "simulation": "simulation file",
        "trace": "trace file", "manifest": "build manifest"}


# ---- YAML: plain data with lines, alias bombs measured on the node graph ---------------------------

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


def parse_yaml(text: str, file: str) -> Located:
    """One YAML (or JSON) document as plain data with the line of every value: no tags, no duplicate
    keys, alias bombs refused before expansion."""
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


# ---- files -------------------------------------------------------------------------------------------

def read_text(path: str | Path, what: str = "workflow") -> str:
    """The file's text, or one InputError naming it: missing, a folder, over the size limit for its
    kind, binary, or not UTF-8."""
    p = Path(path)
    label = WHAT.get(what, what)
    try:
        if not p.exists():
            raise InputError("no such file", file=str(path))
        if p.is_dir():
            raise InputError(f"is a directory, not a {label}", file=str(path))
        size = p.stat().st_size
        limit = LIMITS.get(what, LIMITS["workflow"])
        if size > limit:
            raise InputError(f"{label} is {size} bytes; the limit is {limit}", file=str(path))
        with open(p, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise InputError(f"cannot read the {label}: {e.strerror}", file=str(path)) from None
    if len(raw) > limit:     # grew, or a special file that reports no size
        raise InputError(f"{label} is over the limit of {limit} bytes", file=str(path))
    if b"\x00" in raw:
        raise InputError(f"binary data (NUL bytes), not a {label}", file=str(path))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputError("not UTF-8 text", file=str(path), line=line) from None


def read_yaml(path: str | Path, what: str = "config") -> Located:
    """A YAML (or JSON) file as plain data with the line of every value (see parse_yaml)."""
    return parse_yaml(read_text(path, what), str(path))


class JsonLocated(Located):
    """Parsed JSON; the line of a field is found in the text again only when an error needs it."""

    def __init__(self, data, text: str, file: str | None):
        super().__init__(data, {}, file)
        self.text = text

    def line_of(self, path: tuple) -> int | None:
        path = tuple(path)
        while True:
            offset = _json_offset(self.text, path)
            if offset is not None:
                return self.text.count("\n", 0, offset) + 1
            if not path:
                return None
            path = path[:-1]


def read_json(path: str | Path, what: str) -> JsonLocated:
    return parse_json(read_text(path, what), str(path), what)


def parse_json(text: str, file: str | None, what: str = "plan") -> JsonLocated:
    """JSON text as data, or one InputError naming the file and line. Nesting deeper than
    MAX_JSON_DEPTH is refused before parsing (it would exhaust the parser's recursion)."""
    label = WHAT.get(what, what)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({label}): {e.msg}", file=file, line=e.lineno) from None
    except RecursionError:
        raise InputError(f"{label} nests deeper than {MAX_JSON_DEPTH} levels", file=file) from None
    except MemoryError:
        raise InputError(f"{label} is too large to parse", file=file) from None
    if _max_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InputError(f"{label} nests deeper than {MAX_JSON_DEPTH} levels", file=file)
    return JsonLocated(data, text, file)


def _max_depth(data, limit: int) -> int:
    """Container nesting of parsed JSON, walked without recursion; stops once past `limit`."""
    if not isinstance(data, (list, dict)):
        return 0
    deepest, stack = 0, [(data, 1)]
    while stack:
        obj, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
        values = obj.values() if isinstance(obj, dict) else obj
        stack.extend((v, depth + 1) for v in values if isinstance(v, (list, dict)))
    return deepest


_WS = " \t\r\n"


def _json_offset(text: str, path: tuple) -> int | None:
    """Offset in valid JSON `text` where the value at `path` starts, or None if it is absent."""
    decoder = json.JSONDecoder()

    def ws(i: int) -> int:
        while i < len(text) and text[i] in _WS:
            i += 1
        return i

    try:
        pos = ws(0)
        for part in path:
            if text[pos] == "{" and isinstance(part, str):
                pos = ws(pos + 1)
                while text[pos] != "}":
                    key, pos = json.decoder.scanstring(text, pos + 1)
                    pos = ws(ws(pos) + 1)            # past the colon
                    if key == part:
                        break
                    pos = ws(decoder.raw_decode(text, pos)[1])
                    if text[pos] == ",":
                        pos = ws(pos + 1)
                else:
                    return None
            elif text[pos] == "[" and isinstance(part, int):
                pos, index = ws(pos + 1), 0
                while text[pos] != "]":
                    if index == part:
                        break
                    pos = ws(decoder.raw_decode(text, pos)[1])
                    if text[pos] == ",":
                        pos = ws(pos + 1)
                    index += 1
                else:
                    return None
            else:
                return None
        return pos
    except (IndexError, ValueError):
        return None
