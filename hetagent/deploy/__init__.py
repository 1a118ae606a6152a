"""`hetagent deploy`: plan.json as the configuration a platform team applies (docs/deploy.md).

Stage: after runtime (it reads plan.json through placement's reader and names the runtime's Serve
deployments); nothing here imports hetagent.api. `deploy(...)` builds every file in memory first and
writes them only when nothing failed, so an error leaves nothing written.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from hetagent.errors import HetagentError

TARGETS = ("ray-serve", "kuberay")
FILES = {"ray-serve": "serve.yaml", "kuberay": "rayservice.yaml"}


@dataclass
class Deployed:
    files: dict[str, str]            # file name -> text
    pools: int
    engine: str
    gaps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _catalog(raw: dict) -> dict:
    from hetagent.costmodel.devices import load_catalog
    name = (raw.get("inputs") or {}).get("catalog") or "default"
    try:
        return load_catalog(name)
    except HetagentError:
        return load_catalog()


def render(plan_source, *, target: str, engine: str = "vllm", allow_gaps: bool = False) -> Deployed:
    """The files of one target, in memory. Raises HetagentError (one line naming the pool) on a gap
    unless allow_gaps."""
    from hetagent.deploy import yamltext
    from hetagent.deploy.engines import ENGINES
    from hetagent.deploy.kuberay import PLAN_MOUNT, rayservice
    from hetagent.deploy.serve_config import build_serve_config
    from hetagent.placement.plan import read_plan
    if target not in TARGETS:
        raise HetagentError(f"--target {target}: choose {' or '.join(TARGETS)}")
    if engine not in ENGINES:
        raise HetagentError(f"--engine {engine}: choose {' or '.join(ENGINES)}")
    plan, raw, path = read_plan(plan_source)
    if path is None and target == "ray-serve":
        raise HetagentError("deploy --target ray-serve needs plan.json as a file: the Serve config "
                            "names its path")
    catalog = _catalog(raw)
    ref = PLAN_MOUNT if target == "kuberay" else str(Path(path).resolve())
    b = build_serve_config(plan, raw, catalog, engine=engine, plan_ref=ref)
    gaps = [g.line() for g in b.gaps]
    if gaps and not allow_gaps:
        more = f" (and {len(gaps) - 1} more)" if len(gaps) > 1 else ""
        raise HetagentError(f"{gaps[0]}{more}; --allow-gaps writes the files with the gaps stated")
    head = [f"Serve config written by `hetagent deploy` from {Path(path).name if path else 'plan.json'} "
            f"(engine: {engine})", "apply: serve deploy serve.yaml (docs/deploy.md)"]
    head += [f"GAP: {g}" for g in gaps] + [f"note: {n}" for n in b.notes]
    serve_text = yamltext.dump(b.config, header=head, comments=b.comments)
    if target == "ray-serve":
        files = {FILES[target]: serve_text}
    else:
        name = "-".join(raw.get("workflows") or ["hetagent"])
        rs = rayservice(name, serve_text, raw, catalog)
        khead = [f"KubeRay RayService written by `hetagent deploy` (engine: {engine})",
                 f"first: kubectl create configmap {rs['metadata']['annotations']['hetagent.io/plan-configmap']} "
                 f"--from-file=plan.json=<your plan.json>",
                 "then: kubectl apply -f rayservice.yaml (docs/deploy.md)"] + [f"GAP: {g}" for g in gaps]
        files = {FILES[target]: yamltext.dump(rs, header=khead)}
    return Deployed(files, b.pools, engine, gaps, list(b.notes))


def deploy(plan_source, *, target: str, engine: str = "vllm", out_dir=".", allow_gaps: bool = False) -> dict:
    """Writes the target's files into out_dir (created if missing); returns {files, pools, engine}.
    Gaps (with allow_gaps) and notes go to stderr."""
    from hetagent.atomic import write_atomic
    d = render(plan_source, target=target, engine=engine, allow_gaps=allow_gaps)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise HetagentError(f"-o {out_dir}: not a directory")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in d.files.items():
        write_atomic(out / name, text)
        written.append(str(out / name))
    for g in d.gaps:
        print(f"hetagent: gap: {g}", file=sys.stderr)
    return {"files": written, "pools": d.pools, "engine": d.engine}
