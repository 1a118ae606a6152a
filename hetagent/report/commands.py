"""`hetagent report plan.json [-o report.html] [--format html|md|json]`: the CLI wiring.

cli.py calls `add_commands(subparsers)`; the handler follows the CLI's rules: a user's error raises
HetagentError (one line, exit 1), progress goes to stderr, `--format json` without -o prints one
compact line of JSON on stdout."""
from __future__ import annotations

import json
import sys


def add_commands(subparsers) -> None:
    r = subparsers.add_parser(
        "report", help="the TCO report of a plan: HTML with charts, Markdown or JSON",
        description="Render the TCO report of a plan.json: the recommendation, cost per device, placement, "
                    "critical path, alternatives, Pareto curve, sensitivity and every assumption with its "
                    "source. Solves again from the inputs the plan embeds (bounded by --budget).")
    r.add_argument("plan", help="plan.json written by `hetagent plan`")
    r.add_argument("-o", "--output", help="write the report here (md: PNG charts beside it); without it "
                   "the report is printed (Markdown without charts unless --format says otherwise)")
    r.add_argument("--format", choices=["html", "md", "json"],
                   help="html (default with -o), md or json (default: from the -o suffix)")
    r.add_argument("--no-sweeps", action="store_true",
                   help="skip every re-solve: no Pareto curve or sensitivity (seconds instead of ~30 s)")
    r.add_argument("--budget", type=float, default=120.0, metavar="SECONDS",
                   help="time allowed for all re-solves together (default 120)")
    r.add_argument("--points", type=int, default=8, help="points on the Pareto curve (default 8)")
    r.set_defaults(func=cmd_report)


def cmd_report(args) -> None:
    from hetagent.report import report
    fmt = args.format or (None if args.output else "md")

    def progress(msg):
        print(f"report: {msg}", file=sys.stderr)

    result = report(args.plan, fmt, args.output, sweeps=not args.no_sweeps, budget_s=args.budget,
                    points=args.points, progress=progress)
    if args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    elif isinstance(result, dict):
        sys.stdout.write(json.dumps(result, separators=(",", ":"), default=str) + "\n")
    else:
        sys.stdout.write(result)
