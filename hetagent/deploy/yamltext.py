"""Block-style YAML with comments: a header, and comment lines above named list entries."""
from __future__ import annotations

import yaml


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, s: str):
    style = "|" if "\n" in s else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


_Dumper.add_representer(str, _str)


def dump(doc: dict, header: list[str] | None = None, comments: dict | None = None) -> str:
    """doc as block-style YAML; `header` lines as comments on top; `comments` {name: [lines]} above
    each list entry `- name: <name>`."""
    text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100,
                     allow_unicode=True)
    if comments:
        lines = []
        marks = {}
        for name, cs in comments.items():
            scalar = yaml.dump(name, Dumper=_Dumper).splitlines()[0]
            marks[f"- name: {scalar}"] = cs
        for ln in text.splitlines():
            cs = marks.get(ln.strip())
            if cs:
                pad = ln[: len(ln) - len(ln.lstrip())]
                lines += [f"{pad}# {c}" for c in cs]
            lines.append(ln)
        text = "\n".join(lines) + "\n"
    top = "".join(f"# {h}\n" for h in header or [])
    return top + text
