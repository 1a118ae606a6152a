"""The workflow loader's YAML reader: hetagent.guarded, the one guarded reader every file goes through
(plain data with the line of every value; tags, duplicate keys and alias bombs refused)."""
from __future__ import annotations

from pathlib import Path

from hetagent.guarded import MAX_EXPANDED_NODES, Located, dotted, parse_yaml, to_json  # noqa: F401

load = parse_yaml


def read_text(path: str | Path) -> str:
    """A workflow file's text (size limit, UTF-8, no NUL bytes)."""
    from hetagent.guarded import read_text as guarded_read
    return guarded_read(path, "workflow")
