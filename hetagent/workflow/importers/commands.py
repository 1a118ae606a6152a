"""`hetagent import {dify,langgraph,traces} ...`: the CLI wiring of the importers.

cli.py calls `add_commands(subparsers)`. Without -o the workflow YAML goes to stdout; with -o it is
written (atomically, only once it validates) and a readable summary goes to stdout; `--json` prints the
summary as one compact JSON line and needs -o (stdout carries the JSON). Warnings go to stderr.
"""
from __future__ import annotations

import json
import sys

from hetagent.atomic import write_atomic
from hetagent.workflow.importers.common import parse_self_host


def add_commands(subparsers) -> None:
    i = subparsers.add_parser("import", help="a workflow from a Dify export, a LangGraph program or traces",
                              description="Convert an agent from where it lives into hetagent workflow YAML.")
    fmt = i.add_subparsers(dest="format", required=True, metavar="FORMAT")

    d = fmt.add_parser("dify", help="a Dify app export (.yml, or the API's JSON)")
    d.add_argument("app", help="the Dify export (.yml or .json)")
    d.add_argument("-o", "--output", help="write the workflow YAML here instead of stdout")
    d.add_argument("--self-host", action="append", metavar="MODEL=ID",
                   help="replace a hosted model by a model card id (repeatable)")
    d.set_defaults(func=cmd_dify)

    lg = fmt.add_parser("langgraph", help="a LangGraph program, read without running it",
                        description="Read a LangGraph program's graph (nodes, edges, routing, subgraphs, models, "
                                    "tools) without calling a model or a tool.")
    lg.add_argument("target", metavar="TARGET",
                    help="path/to/file.py:attr, package.module:attr, or a langgraph.json")
    lg.add_argument("--graph", metavar="NAME", help="the graph of a langgraph.json (default: the first)")
    _common(lg, "the program's hosted model")
    lg.set_defaults(func=cmd_langgraph, parser=lg)

    tr = fmt.add_parser("traces", help="recorded spans (OTLP JSON, OTel SDK JSON, Langfuse, LangSmith, Phoenix)",
                        description="Infer a workflow (or fill in one given with --structure) from recorded "
                                    "traces: token counts, tool latencies, loop counts, branch shares, rate.")
    tr.add_argument("files", nargs="+", metavar="FILE", help="span files")
    tr.add_argument("--structure", metavar="WORKFLOW",
                    help="a workflow (YAML, e.g. from `import langgraph`) whose numbers the traces replace")
    _common(tr, "a model in the traces")
    tr.set_defaults(func=cmd_traces, parser=tr)


def _common(p, what: str):
    p.add_argument("-o", "--output", metavar="FILE", help="write the workflow YAML here (default: stdout)")
    p.add_argument("--json", action="store_true", help="print the summary as one line of JSON (needs -o)")
    p.add_argument("--self-host", action="append", metavar="NAME=ID",
                   help=f"run {what} on a catalog model instead (repeatable)")


def cmd_dify(args) -> None:
    from hetagent.workflow.importers import dify
    text = dify.to_yaml(args.app, self_host=parse_self_host(args.self_host))
    if args.output:
        write_atomic(args.output, text)
    else:
        sys.stdout.write(text)


def cmd_langgraph(args) -> None:
    from hetagent.workflow.importers.langgraph import import_langgraph
    _need_output(args)
    imp = import_langgraph(args.target, graph=args.graph, self_host=parse_self_host(args.self_host))
    _finish(args, imp, ("nodes", "edges", "llm_nodes", "tool_nodes", "loops", "branches", "subagents",
                        "warnings", "workflow"))


def cmd_traces(args) -> None:
    from hetagent.workflow.importers.traces import import_traces
    _need_output(args)
    imp = import_traces(args.files, structure=args.structure, self_host=parse_self_host(args.self_host))
    _finish(args, imp, ("traces", "spans", "llm_calls", "tool_calls", "skipped", "workflow",
                        "tokens_per_request", "warnings"))


def _need_output(args):
    if args.json and not args.output:
        args.parser.error("--json needs -o FILE: stdout carries the JSON summary, the workflow goes to the file")


def _finish(args, imp, keys) -> None:
    from hetagent.workflow.importers.base import render
    text = render(imp, file=args.output or "<import>")
    if args.output:
        write_atomic(args.output, text)
    for w in imp.warnings:
        print(f"hetagent: warning: {w}", file=sys.stderr)
    doc = {**imp.summary, "workflow": args.output}
    if args.json:
        sys.stdout.write(json.dumps({k: doc[k] for k in keys}, separators=(",", ":"), default=str) + "\n")
    elif args.output:
        sys.stdout.write(readable(imp.format, doc) + f"wrote {args.output}\n")
    else:
        sys.stdout.write(text)


def readable(fmt: str, s: dict) -> str:
    if fmt == "traces":
        t = s["tokens_per_request"]
        lines = [f"{s['traces']} trace(s), {s['spans']} span(s): {s['llm_calls']} LLM call(s), "
                 f"{s['tool_calls']} tool call(s)",
                 f"tokens per request: {t['input']:.1f} input + {t['output']:.1f} output (mean per trace)"]
        lines += [f"skipped {x['span']}: {x['why']}" for x in s["skipped"]]
    else:
        lines = [f"graph: {s['nodes']} node(s), {s['edges']} edge(s)",
                 f"workflow: {s['llm_nodes']} LLM node(s), {s['tool_nodes']} tool node(s), {s['loops']} loop(s), "
                 f"{s['branches']} branch(es), {s['subagents']} sub-agent(s)"]
    lines += [f"{len(s['warnings'])} warning(s) (on stderr and in the file's header)"] if s["warnings"] else []
    return "\n".join(lines) + "\n"
