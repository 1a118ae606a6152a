"""A plan as one Serve application per workflow, built from a Serve config (`serve deploy`).

`hetagent deploy plan.json --target ray-serve` (hetagent.deploy) writes a Serve config whose every
application has `import_path: hetagent.runtime.app:build_app` and `args: {plan: <plan.json path>,
workflow: <index>}`. Serve's controller calls `build_app(args)`, which lays the workflow out as
`hetagent run` does (hetagent.runtime.deploy: a unit per serving pool of plan.json, without fused
chains, so there is exactly one deployment per pool) and binds the same deployments the runtime runs
(hetagent.runtime.pools and hetagent.runtime.ingress) into one application: the ingress (`ingress`),
which receives a deployment handle for every pool deployment (named by `deployment_name`). The
config's `deployments` entries then set each one's replicas, resources and `user_config` (the engine
settings of an LLM pool, which a pool replica reports in `info()`).

What differs from `hetagent run`: no warm-up request (every emulated call runs its own stand-in), and
a pool with a `tool.lookup` operator starts the loopback search tool inside its replica (there is no
driver process to hold it).
"""
from __future__ import annotations

import re

from hetagent.errors import HetagentError

INGRESS = "ingress"
BUILTIN_TOOL = "builtin:"     # OpSpec.tool_url: the replica starts the loopback search tool itself


def deployment_name(pool_id: str) -> str:
    """The Serve deployment of a plan pool: its id with characters Serve's names and routes dislike
    ('/', '#', spaces...) replaced by '~'."""
    return re.sub(r"[^A-Za-z0-9_.:@+~-]", "~", pool_id)


def layout(plan, workflow: int = 0, real_devices=None):
    """(Deployment, Layout) of one workflow of a plan, one unit per serving pool (no fused chains),
    units named by `deployment_name`."""
    from hetagent.runtime.deploy import Deployment
    d = Deployment(plan, workflow_index=workflow, fuse=False, real_devices=real_devices,
                   app_prefix="")
    lay = d.layout_for(d.graph)
    for u, spec in lay.units.items():
        spec.app = deployment_name(u)
    return d, lay


def build_app(args: dict):
    """Serve's application builder (`import_path: hetagent.runtime.app:build_app`). args: `plan`
    (plan.json path, or its JSON text), `workflow` (index, default 0), `real` (devices that are really
    there; default local-cpu plus HETAGENT_REAL_DEVICES), `admission` (default true)."""
    from hetagent.runtime.ingress import bind_ingress
    from hetagent.runtime.pools import bind_pool
    args = dict(args or {})
    if "plan" not in args:
        raise HetagentError("build_app needs args.plan (a plan.json path or its text)")
    real = args.get("real")
    d, lay = layout(args["plan"], int(args.get("workflow", 0)),
                    real_devices=set(real) if real is not None else None)
    for spec in lay.units.values():
        for s in spec.ops.values():
            if s.kind == "tool.lookup" and not s.tool_url:
                s.tool_url = BUILTIN_TOOL
    d.layout = lay
    cfg = d.ingress_config(admission=bool(args.get("admission", True)))
    cfg["routes"] = lay.routes()
    units = {s.app: bind_pool(s) for s in lay.units.values()}
    return bind_ingress(cfg, units=units)
