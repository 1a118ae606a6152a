"""The `hetagent` command line: a thin layer over hetagent.api.

Rules every command keeps: `--json` prints exactly one compact JSON document on one line of stdout and
nothing else; logs go to stderr; a user's error exits 1 with one line on stderr and writes nothing;
usage errors exit 2. `-o FILE` writes atomically (a temporary file renamed into place).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from hetagent.atomic import write_atomic
from hetagent.errors import HetagentError


write_output = write_atomic


def print_json(doc) -> None:
    sys.stdout.write(json.dumps(doc, separators=(",", ":"), default=str) + "\n")


# Optional dependencies by the extra (pyproject.toml) that installs them.
OPTIONAL_EXTRAS = {
    "runtime": {"ray", "fastapi", "uvicorn", "httpx", "prometheus_client"},
    "codegen": {"torch", "torch_mlir", "onnx", "onnxruntime", "iree"},
    "models": {"faster_whisper", "ctranslate2", "piper", "sentence_transformers", "faiss", "llama_cpp"},
    "test": {"selenium"},
}


# Every number a command takes, by argparse dest: (lowest, highest, lowest excluded, highest excluded).
# main() checks them all after parsing, so a bad value is one line naming the flag, before any work.
NUMBER_FLAGS = {
    "rate": (0, 1e6, True, False), "sla_ms": (0, 1e12, True, False),
    "soft_sla_penalty": (0, 1e12, False, False), "time_limit": (0, 86400, True, False),
    "gap": (0, 1, False, False), "points": (2, 200, False, False), "budget": (0, 86400, True, False),
    "seed": (0, 2**32 - 1, False, False), "validate_seed": (0, 2**32 - 1, False, False),
    "duration": (0, 1e7, True, False), "validate_duration": (0, 1e7, True, False),
    "requests": (1, 10**7, False, False), "concurrency": (1, 10**5, False, False),
    "port": (0, 65535, False, False), "cv": (0, 100, True, False), "burst_factor": (1, 1e3, False, False),
    "burst_fraction": (0, 1, True, True), "burst_seconds": (0, 1e7, True, False),
    "repeats": (1, 1000, False, False), "tokens": (1, 10**9, False, False),
    "context": (0, 10**9, False, False), "batch": (1, 10**6, False, False), "tp": (1, 1024, False, False),
    "pp": (1, 1024, False, False), "max_events": (1, 10**10, False, False),
    "validate_requests": (1, 10**6, False, False),
}


def check_numbers(args) -> None:
    """Range-checks every numeric flag given (NUMBER_FLAGS): finite, within bounds; one line naming it."""
    for dest, (lo, hi, lo_open, hi_open) in NUMBER_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        bad = not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo) \
            or (hi_open and value == hi)
        if bad:
            kind = "a whole number" if isinstance(value, int) else "a finite number"
            raise HetagentError(f"--{dest.replace('_', '-')} must be {kind} {'>' if lo_open else '>='} "
                                f"{_bound(lo)} and {'<' if hi_open else '<='} {_bound(hi)}, got {value!r}")


def check_output(args) -> None:
    """`-o FILE` names a file in a folder that exists: refused before any work, not after it."""
    out = getattr(args, "output", None)
    if not out or args.command in ("build", "deploy"):     # their -o is the folder they fill
        return
    path = Path(out)
    if path.is_dir():
        raise HetagentError(f"{out}: is a directory; -o names a file to write")
    if not path.parent.is_dir():
        raise HetagentError(f"{out}: directory {path.parent} does not exist")


def _bound(x) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


MAX_MESSAGE_CHARS = 600


def one_line(message: str) -> str:
    """An error message as one short line: newlines folded; a long '; '-separated list keeps its first
    items and says how many more there were."""
    message = " ".join(message.split())
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    parts = message.split("; ")
    kept: list[str] = []
    for part in parts:
        if len("; ".join(kept + [part])) > MAX_MESSAGE_CHARS - 30:
            break
        kept.append(part)
    if kept and len(kept) < len(parts):
        return "; ".join(kept) + f"; and {len(parts) - len(kept)} more"
    return message[:MAX_MESSAGE_CHARS - 1] + "…"


from hetagent.workflow.importers.common import parse_self_host as _self_host  # noqa: E402


# ---- commands ------------------------------------------------------------------------------------

def cmd_compile(args) -> None:
    from hetagent import api
    wf = api.load(args.workflow, self_host=_self_host(args.self_host))
    text = api.to_mlir(api.compile(wf, passes=args.passes), generic=args.generic)
    if args.output:
        write_output(args.output, text)
    else:
        sys.stdout.write(text)


def cmd_schema(args) -> None:
    if args.kind == "fleet":
        from hetagent.costmodel.fleet import fleet_json_schema as json_schema
    else:
        from hetagent.workflow.model import json_schema
    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output:
        write_output(args.output, text)
    else:
        sys.stdout.write(text)


def cmd_devices(args) -> None:
    from hetagent.costmodel import devices
    if args.json:
        print_json(devices.devices_json(args.catalog))
    else:
        sys.stdout.write(devices.format_devices_table(args.catalog).rstrip("\n") + "\n")


def cmd_estimate(args) -> None:
    from hetagent import api
    from hetagent.costmodel.estimate import format_estimate
    d = api.estimate(args.model, args.device, args.op, tokens=args.tokens, batch=args.batch,
                     context=args.context, tp=args.tp, pp=args.pp, precision=args.precision,
                     catalog=args.catalog, kv_precision=args.kv_precision)
    if args.json:
        print_json(d)
    else:
        sys.stdout.write(format_estimate(d) + "\n")


def cmd_cost(args) -> None:
    from hetagent import api
    devices = [x for d in args.devices or [] for x in d.split(",") if x]
    d = api.cost(args.workflow, devices or None, args.catalog)
    if args.json:
        print_json(d)
        return
    devs = sorted({dev for row in d["operators"] for dev in row["devices"]})
    width = max(len(r["operator"]) for r in d["operators"]) + 2
    lines = [f"{d['workflow']}: best latency (ms) of each operator per device; '-' = cannot run "
             f"(catalog {d['catalog']})", "operator".ljust(width) + "".join(x[:9].rjust(10) for x in devs)]
    for row in d["operators"]:
        cells = []
        for dev in devs:
            c = row["devices"].get(dev)
            cells.append("-" if c is None or "infeasible" in c else f"{c['latency_ms']:.4g}")
        lines.append(row["operator"].ljust(width) + "".join(x.rjust(10) for x in cells))
    sys.stdout.write("\n".join(lines) + "\n")


def cmd_calibrate(args) -> None:
    from hetagent.backends import calibrate
    result = calibrate.run(args)
    out = result.pop("written_to", None) or args.out or calibrate.DEFAULT_CPU_PATH
    print(f"wrote {out}", file=sys.stderr)
    if args.json:
        print_json(result)


def cmd_plan(args) -> None:
    from hetagent import api
    from hetagent.placement import format_plan
    kwargs = dict(fleet=args.fleet, tco=args.tco, catalog=args.catalog, profiles=args.profiles,
                  rate=args.rate, precisions=tuple(args.precision.split(",")),
                  time_limit_s=args.time_limit, gap=args.gap)
    if args.sweep_sla:
        curve = api.sweep_sla(args.workflows, points=args.points, **kwargs)
        if args.json:
            print_json({"version": 1, "pareto": curve})
        else:
            lines = ["SLA ms      feasible  TCO $/h     end-to-end ms  status"]
            lines += [f"{c['sla_ms']:<11.1f} {str(c['feasible']):<9} "
                      f"{(c['per_hour'] if c['per_hour'] is not None else float('nan')):<11.4f} "
                      f"{(c['end_to_end_ms'] if c['end_to_end_ms'] is not None else float('nan')):<14.1f} "
                      f"{c['status']}" for c in curve]
            sys.stdout.write("\n".join(lines) + "\n")
        return
    plan_kwargs = dict(kwargs, sla_ms=args.sla_ms, objective=args.objective,
                       soft_sla_penalty=args.soft_sla_penalty, cross_vendor_kv=args.cross_vendor_kv)
    if args.max_rate:
        if args.fleet is None:
            raise HetagentError("--max-rate needs --fleet: the inventory whose highest rate you want")
        got = api.max_rate(args.workflows, fleet=args.fleet, tco=args.tco, catalog=args.catalog,
                           precisions=kwargs["precisions"], sla_ms=args.sla_ms, objective=args.objective,
                           time_limit_s=args.time_limit, gap=args.gap, cross_vendor_kv=args.cross_vendor_kv,
                           validate=not args.no_validate, validate_seed=args.validate_seed,
                           validate_requests=args.validate_requests)
        doc = got["plan"].to_json()
        doc["max_rate"] = {"rate_rps": got["rate_rps"], "binding": got["binding"], "probes": got["probes"]}
        if args.output:
            write_output(args.output, json.dumps(doc, indent=1) + "\n")
        if args.json:
            print_json(doc)
        else:
            sys.stdout.write(format_plan(got["plan"]).rstrip("\n") + "\n")
            sys.stdout.write(f"highest rate meeting the SLA on this fleet: {got['rate_rps']:.4g} requests/s "
                             f"({len(got['probes'])} plans tried)\nabove it: {got['binding']}\n")
            if args.output:
                sys.stdout.write(f"wrote {args.output}\n")
        return
    plan = api.plan(args.workflows, **plan_kwargs, validate=not args.no_validate,
                    validate_seed=args.validate_seed, validate_requests=args.validate_requests)
    validation = plan.validation
    from hetagent.simulator.commands import format_validation, validation_json
    doc = plan.to_json()
    if validation is not None:
        doc["validation"] = validation_json(validation)
    if args.output:
        write_output(args.output, json.dumps(doc, indent=1) + "\n")
    if args.json:
        print_json(doc)
    else:
        sys.stdout.write(format_plan(plan).rstrip("\n") + "\n")
        if validation is not None:
            sys.stdout.write(format_validation(validation).rstrip("\n") + "\n")
        if args.output:
            sys.stdout.write(f"wrote {args.output}\n")


def cmd_build(args) -> None:
    from hetagent.backends.codegen import build_from_plan
    targets = [t for spec in args.targets or [] for t in spec.split(",") if t] or None
    manifest = build_from_plan(args.plan, args.output, targets=targets)
    if args.json:
        print_json(manifest)
        return
    rows = [("operator", "target", "status", "note")]
    rows += [(a["operator"], a["target"], a["status"], (a.get("note") or "")[:70]) for a in manifest["assets"]]
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    lines = ["  ".join(str(r[i]).ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    lines.append(f"wrote {Path(args.output) / 'manifest.json'}")
    sys.stdout.write("\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    from hetagent.passes.registry import DEFAULT_PIPELINE
    p = argparse.ArgumentParser(prog="hetagent", description=(
        "Compile AI agent workflows onto heterogeneous hardware: IR, cost model, TCO-minimizing "
        "placement, runtime."))
    p.add_argument("--config-dir", help="configuration folder (default: the packaged configs/)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("compile", help="workflow (YAML or Dify export) -> MLIR")
    c.add_argument("workflow", help="workflow file (.yaml, or a Dify export .yml/.json)")
    c.add_argument("-o", "--output", help="write the MLIR here instead of stdout")
    c.add_argument("--passes", default=DEFAULT_PIPELINE,
                   help=f"pass pipeline, MLIR syntax (default: {DEFAULT_PIPELINE})")
    c.add_argument("--generic", action="store_true", help="print MLIR in generic form")
    c.add_argument("--self-host", action="append", metavar="MODEL=ID",
                   help="Dify: replace a hosted model by a model card id (repeatable)")
    c.set_defaults(func=cmd_compile)

    s = sub.add_parser("schema", help="print the JSON Schema of workflow files (or of fleet files)")
    s.add_argument("kind", nargs="?", choices=["workflow", "fleet"], default="workflow",
                   help="workflow (default) or fleet (configs/fleets files)")
    s.add_argument("-o", "--output")
    s.set_defaults(func=cmd_schema)

    from hetagent.workflow.importers.commands import add_commands as import_commands
    import_commands(sub)

    dv = sub.add_parser("devices", help="the device catalog with cost-efficiency figures")
    dv.add_argument("--catalog", default="default", help="catalog variant (default, paper-2025)")
    dv.add_argument("--json", action="store_true", help="one line of JSON on stdout")
    dv.set_defaults(func=cmd_devices)
    from hetagent.costmodel.servers import add_commands as server_commands
    server_commands(sub)

    e = sub.add_parser("estimate", help="latency, throughput, memory and bound of one LLM phase")
    e.add_argument("--model", required=True, help="model id, e.g. llama-3-8b")
    e.add_argument("--device", required=True, help="device id, e.g. h100")
    e.add_argument("--op", required=True, choices=["prefill", "decode"])
    e.add_argument("--tokens", type=int, help="prefill: prompt tokens; decode: steps (default 1)")
    e.add_argument("--batch", type=int, default=1)
    e.add_argument("--context", type=int, help="decode: context length in tokens")
    e.add_argument("--tp", type=int, default=1)
    e.add_argument("--pp", type=int, default=1)
    e.add_argument("--precision", default="fp16", help="weights' precision (default: fp16)")
    e.add_argument("--kv-precision", choices=["fp32", "fp16", "bf16", "fp8", "fp4"],
                   help="KV-cache precision (default: the weights' precision if the device has a rate for it and it is "
                        "a KV format, else bf16; fp16 where the device has no bf16 rate)")
    e.add_argument("--catalog", default="default")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_estimate)

    co = sub.add_parser("cost", help="every operator of a workflow on every device")
    co.add_argument("workflow", help="workflow file or compiled .mlir")
    co.add_argument("--devices", action="append", help="device ids (comma-separated or repeated)")
    co.add_argument("--catalog", default="default")
    co.add_argument("--json", action="store_true")
    co.set_defaults(func=cmd_cost)

    pl = sub.add_parser("plan", help="choose the fleet and placement with the lowest TCO meeting the SLA")
    pl.add_argument("workflows", nargs="+", metavar="WF", help="workflow files or compiled .mlir")
    pl.add_argument("--fleet", help="fleet name or file (default: buy any catalog device)")
    pl.add_argument("--tco", default="default", help="TCO assumptions, name or file (default: default)")
    pl.add_argument("--catalog", help="device catalog (default: the fleet's, else default)")
    pl.add_argument("--profiles", help="measured profiles overriding the cost model")
    pl.add_argument("--rate", type=float, help="requests per second (default: each workflow's)")
    pl.add_argument("--sla-ms", type=float, help="end-to-end SLA in ms (default: each workflow's)")
    pl.add_argument("--precision", default="fp16,bf16",
                    help="LLM precisions allowed, comma-separated (default: fp16,bf16)")
    pl.add_argument("--objective", choices=["tco", "offline"], default="tco",
                    help="tco: cheapest meeting the SLA; offline: most tokens per second per dollar")
    pl.add_argument("--soft-sla-penalty", type=float,
                    help="make the SLA soft: $ per hour per ms of violation")
    pl.add_argument("--time-limit", type=float, default=30.0, help="solver time limit in seconds")
    pl.add_argument("--gap", type=float, default=1e-4, help="relative optimality gap to stop at")
    pl.add_argument("--cross-vendor-kv", action="store_true",
                    help="allow an LLM's prefill and decode pools on two vendors' devices, the KV cache "
                         "crossing between them (no serving engine offers it today; off by default)")
    pl.add_argument("--max-rate", action="store_true",
                    help="with --fleet of owned or capped devices: the highest request rate meeting the SLA, "
                         "and the pool that binds above it")
    pl.add_argument("--sweep-sla", action="store_true", help="trace the TCO-versus-SLA Pareto curve")
    pl.add_argument("--points", type=int, default=8, help="points on the --sweep-sla curve")
    pl.add_argument("-o", "--output", help="write plan.json here")
    pl.add_argument("--json", action="store_true", help="print plan.json on one line")
    pl.add_argument("--no-validate", action="store_true",
                    help="skip the check by simulation (by default every plan is simulated and, while its "
                         "SLA percentile fails, re-planned with more headroom)")
    pl.add_argument("--validate", action="store_true", help=argparse.SUPPRESS)   # the default; kept for scripts
    pl.add_argument("--validate-seed", type=int, default=0, help="first seed of the validation runs")
    pl.add_argument("--validate-requests", type=int, default=8000,
                    help="arrivals per validation run (3 runs; default 8000)")
    pl.set_defaults(func=cmd_plan)

    b = sub.add_parser("build", help="device-specific executables for the placed tensor operators")
    b.add_argument("plan", help="plan.json")
    b.add_argument("-o", "--output", default="assets", help="output folder (default: assets/)")
    b.add_argument("--targets", action="append",
                   help="targets instead of each device's own, e.g. llvm-cpu,cuda:sm_80,rocm:gfx942,onnx")
    b.add_argument("--json", action="store_true", help="print the manifest on one line")
    b.set_defaults(func=cmd_build)

    from hetagent.report.commands import add_commands as report_commands
    report_commands(sub)
    from hetagent.runtime.commands import add_commands as runtime_commands
    runtime_commands(sub)
    from hetagent.simulator.commands import add_commands as simulator_commands
    simulator_commands(sub)
    from hetagent.deploy.commands import add_commands as deploy_commands
    deploy_commands(sub)

    ca = sub.add_parser("calibrate", help="measure the real operators on this machine (CPU, or --gpu)")
    from hetagent.backends.calibrate import add_arguments
    add_arguments(ca)
    ca.add_argument("--json", action="store_true")
    ca.set_defaults(func=cmd_calibrate)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config_dir:
        os.environ["HETAGENT_CONFIG_DIR"] = args.config_dir
    try:
        check_numbers(args)
        check_output(args)
        args.func(args)
    except HetagentError as e:
        print(f"hetagent: error: {one_line(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hetagent: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except ModuleNotFoundError as e:  # an optional dependency: say which extra brings it
        top = (e.name or "").split(".")[0]
        extra = next((x for x, mods in OPTIONAL_EXTRAS.items() if top in mods), None)
        if extra is None:
            raise
        print(f"hetagent: error: `hetagent {args.command}` needs the package '{top}'; install it with "
              f"pip install 'hetagent[{extra}]'", file=sys.stderr)
        return 1
    except Exception as e:  # a bug, not the user's fault: still one line, details on request
        if os.environ.get("HETAGENT_DEBUG"):
            raise
        print(f"hetagent: internal error: {type(e).__name__}: {one_line(str(e))} (HETAGENT_DEBUG=1 "
              f"shows the traceback; please report it)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
