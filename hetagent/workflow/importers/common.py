"""Helpers every importer shares: node ids from free text, token estimates, numbers from loose fields,
and the key order of the YAML they write."""
from __future__ import annotations

import math
import re

from hetagent.errors import HetagentError

ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def fix_surrogates(s: str) -> str:
    """JSON writes emoji as surrogate pairs (\\ud83e\\udd16); join them into the real characters."""
    if not any("\ud800" <= c <= "\udfff" for c in s):
        return s
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def tokens_of_text(s: str) -> int:
    """Token estimate of a text: ASCII characters / 4, plus one token per other character."""
    ascii_n = sum(1 for c in s if ord(c) < 128)
    return math.ceil(ascii_n / 4) + (len(s) - ascii_n)


def symbol(s: str) -> str:
    """A node id made of free text (letters, digits, `_`, `-`), or "" when nothing usable is left."""
    out = re.sub(r"[^A-Za-z0-9_\-]", "_", s.strip())
    out = re.sub(r"_+", "_", out).strip("_-")
    if not out or not re.search(r"[A-Za-z0-9]", out):
        return ""
    return out if ID_RE.match(out) else "n" + out


def unique_id(base: str, taken: set[str]) -> str:
    """A node id from free text, suffixed _2, _3, ... until it is not in `taken` (which it joins)."""
    base = symbol(base) or "node"
    out, k = base, 2
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def number(v, default):
    """A number from a field that may be a constant wrapper {type: constant, value: N} or a string."""
    if isinstance(v, dict) and "value" in v:
        v = v["value"]
    if isinstance(v, bool) or v is None:
        return default
    if isinstance(v, (int, float)):
        return v
    try:
        return float(str(v).strip())
    except ValueError:
        return default


def ordered(v):
    """Native data with each node's keys in reading order: id, kind, inputs, description, the rest."""
    if isinstance(v, list):
        return [ordered(x) for x in v]
    if isinstance(v, dict):
        first = [k for k in ("name", "id", "kind", "inputs", "description") if k in v]
        return {k: ordered(v[k]) for k in first + [k for k in v if k not in first]}
    return v


def parse_self_host(pairs: list[str] | None) -> dict[str, str]:
    """`--self-host NAME=ID` options as {hosted model name: model card id}."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise HetagentError(f"--self-host '{pair}': expected HOSTED_MODEL=MODEL_ID, "
                                "e.g. gpt-4o=llama-3-70b")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out
