"""`hetagent deploy plan.json --target ray-serve|kuberay [--engine vllm|sglang] [-o DIR] [--allow-gaps]
[--json]`: registered by the CLI through `add_commands`."""
from __future__ import annotations

import json


def cmd_deploy(args) -> None:
    from hetagent.deploy import deploy
    res = deploy(args.plan, target=args.target, engine=args.engine, out_dir=args.output,
                 allow_gaps=args.allow_gaps)
    if args.json:
        print(json.dumps(res))
    else:
        for f in res["files"]:
            print(f"wrote {f} ({res['pools']} pools, engine {res['engine']})")


def add_commands(subparsers) -> None:
    from hetagent.deploy import TARGETS
    from hetagent.deploy.engines import ENGINES
    p = subparsers.add_parser("deploy", help="write Ray Serve or KubeRay configuration for a plan",
                              description="Turn plan.json into serve.yaml (`serve deploy`) or "
                              "rayservice.yaml (KubeRay), with engine settings per LLM pool "
                              "(docs/deploy.md).")
    p.add_argument("plan", help="plan.json from `hetagent plan`")
    p.add_argument("--target", required=True, choices=TARGETS)
    p.add_argument("--engine", choices=ENGINES, default="vllm",
                   help="LLM engine whose settings are written (default vllm)")
    p.add_argument("-o", "--output", default=".", metavar="DIR", help="output folder (default: .)")
    p.add_argument("--allow-gaps", action="store_true",
                   help="write pools a target cannot run, with the gap in a comment and on stderr")
    p.add_argument("--json", action="store_true", help='one line: {"files", "pools", "engine"}')
    p.set_defaults(func=cmd_deploy)
