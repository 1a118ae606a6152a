"""The TCO report (docs/report.md): what a user forwards to whoever signs the hardware budget.

    import hetagent.report
    html = hetagent.report.report("plan.json")                       # str, one self-contained HTML page
    hetagent.report.report("plan.json", "md", out="report.md")       # + report-<chart>.png beside it
    model = hetagent.report.report("plan.json", "json")              # dict: every number shown

The report needs only plan.json: it solves again from the inputs the plan embeds for the homogeneous
alternatives, the Pareto curve and the sensitivity sweeps (bounded by `budget_s`), and shows simulated
or measured figures when plan.json or the files beside it carry them (simulation.json, run.json).
"""
from __future__ import annotations

import json
from pathlib import Path

from hetagent.atomic import write_atomic
from hetagent.errors import InputError

__all__ = ["FORMATS", "build_model", "format_for", "report"]

FORMATS = ("html", "md", "json")
_SUFFIX = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json"}


def format_for(out: str | Path | None, fmt: str | None) -> str:
    """The format asked for, else the one the output's suffix names, else html."""
    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"unknown report format '{fmt}'; choices: {', '.join(FORMATS)}")
        return fmt
    if out:
        return _SUFFIX.get(Path(out).suffix.lower(), "html")
    return "html"


_write = write_atomic


def build_model(plan, *, sweeps: bool = True, budget_s: float = 120.0, points: int = 8, progress=None) -> dict:
    """The report model (the `json` format): every number the report shows, with its provenance."""
    from hetagent.report.model import build
    return build(plan, sweeps=sweeps, budget_s=budget_s, points=points, progress=progress)


def report(plan, fmt: str | None = None, out: str | Path | None = None, *, sweeps: bool = True,
           budget_s: float = 120.0, points: int = 8, progress=None, md_charts: bool | None = None):
    """Render the TCO report of `plan` (a plan.json path, its text, a dict or a Plan).

    fmt: "html" (default, or from out's suffix), "md" or "json". out: where to write it (md also writes
    one PNG per chart beside it, `<stem>-<chart>.png`). Returns the HTML or Markdown text, or the model
    dict for json. sweeps=False skips every re-solve (no Pareto curve, no sensitivity, alternatives
    without latency); budget_s bounds the re-solves together."""
    fmt = format_for(out, fmt)
    model = build_model(plan, sweeps=sweeps, budget_s=budget_s, points=points, progress=progress)
    out_path = Path(out) if out else None
    if fmt == "json":
        if out_path:
            _write(out_path, json.dumps(model, indent=1) + "\n")
        return model
    if fmt == "md":
        from hetagent.report.markdown import render
        with_charts = (out_path is not None) if md_charts is None else md_charts
        text, pngs = render(model, out_path, charts=with_charts)
        if out_path:
            for name, data in pngs.items():
                _write(out_path.parent / name, data)
            _write(out_path, text)
        return text
    from hetagent.report.html import render as render_html
    text = render_html(model)
    if out_path:
        _write(out_path, text)
    return text
