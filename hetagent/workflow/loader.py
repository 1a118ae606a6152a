"""Load and validate a workflow file. Every error names the file, the line and the field.

    wf = load("configs/workflows/voice_agent.yaml")

A Dify export (YAML or the JSON API wrapper) is recognised by its content and imported
(hetagent.workflow.importers.dify). Validation beyond the schema: unique ids, references that resolve within
their scope, no cycle outside a loop, known model ids, branch probabilities summing to 1, sub-agent
files that exist and do not include themselves.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from hetagent import configs
from hetagent.errors import WorkflowError
from hetagent.workflow import safeyaml
from hetagent.workflow.model import (MAX_LOOP_COPIES, NODE_KINDS, BranchNode, CodeNode, LlmNode, LoopNode,
                                     SubAgentNode, Workflow)

MODEL_FIELDS = ("model", "embed_model")


def load(path: str | Path, *, config_dir=None, self_host: dict[str, str] | None = None,
         _stack: tuple = ()) -> Workflow:
    """Read, parse and validate a workflow file (native YAML or a Dify export)."""
    file = str(path)
    text = safeyaml.read_text(path)
    return loads(text, file=file, base_dir=Path(path).resolve().parent, config_dir=config_dir,
                 self_host=self_host, _stack=_stack + (str(Path(path).resolve()),))


def loads(text: str, *, file: str = "<string>", base_dir: Path | None = None, config_dir=None,
          self_host: dict[str, str] | None = None, _stack: tuple = ()) -> Workflow:
    located = safeyaml.load(text, file)
    data = located.data
    from hetagent.workflow.importers import dify  # the importer is a front end beside this loader
    if dify.is_dify(data):
        data, located = dify.to_native(located, self_host=self_host or {})
        text = None
    elif self_host:
        raise WorkflowError("--self-host applies to Dify exports; this is a native workflow",
                            file=file)
    if not isinstance(data, dict):
        raise WorkflowError(f"the top level must be a mapping with `name` and `nodes`, "
                            f"not a {type(data).__name__}", file=file, line=1)
    wf = from_data(located, config_dir=config_dir)
    wf._source_text = text
    wf._source_file = file
    _check(wf, located, base_dir or Path("."), config_dir, _stack)
    return wf


def from_data(located: safeyaml.Located, config_dir=None) -> Workflow:
    try:
        return Workflow.model_validate(located.data)
    except ValidationError as e:
        raise _first_error(e, located) from None


def _first_error(e: ValidationError, located: safeyaml.Located) -> WorkflowError:
    err = e.errors(include_url=False)[0]
    path = _data_path(located.data, err["loc"])
    if err["type"] == "union_tag_invalid":
        msg = f"unknown node kind '{err['ctx']['tag']}'; kinds: {', '.join(NODE_KINDS)}"
        path = path + ("kind",)
    elif err["type"] == "union_tag_not_found":
        msg = f"missing `kind`; kinds: {', '.join(NODE_KINDS)}"
    elif err["type"] == "extra_forbidden":
        msg = f"unknown field '{path[-1]}'"
    elif err["type"] == "missing":
        msg = "required field is missing"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        if "input" in err and not isinstance(err["input"], (dict, list)):
            msg += f" (got {err['input']!r})"
    return WorkflowError(msg, file=located.file, line=located.line_of(path),
                         field=safeyaml.dotted(path) or None)


def _data_path(data, loc) -> tuple:
    """Pydantic's loc with discriminator tags and validator names removed: a path into the data."""
    path, cur = [], data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
            path.append(part)
        elif isinstance(cur, list) and isinstance(part, int) and part < len(cur):
            cur = cur[part]
            path.append(part)
        elif isinstance(cur, dict) and isinstance(part, str) and not path_is_tag(cur, part):
            path.append(part)  # a missing field: name it
            cur = None
    return tuple(path)


def path_is_tag(cur: dict, part: str) -> bool:
    return cur.get("kind") == part or part.startswith("function-") or part in ("list", "union")


# ---- checks beyond the schema ------------------------------------------------------------------

def node_paths(wf: Workflow) -> dict[str, tuple]:
    """id -> path of the node in the document."""
    out: dict[str, tuple] = {}

    def rec(nodes, prefix):
        for i, n in enumerate(nodes):
            p = prefix + (i,)
            out.setdefault(n.id, p)
            if isinstance(n, LoopNode):
                rec(n.body, p + ("body",))
            elif isinstance(n, BranchNode):
                for a, arm in enumerate(n.arms):
                    rec(arm.nodes, p + ("arms", a, "nodes"))
    rec(wf.nodes, ("nodes",))
    return out


def _check(wf: Workflow, located, base_dir: Path, config_dir, stack: tuple,
           loaded: dict | None = None) -> None:
    """`loaded` shares sub-agent files between nodes: one file, one Workflow, one IR function."""
    loaded = {} if loaded is None else loaded
    paths = node_paths(wf)

    def fail(node_id, msg, field=None):
        p = paths.get(node_id, ())
        if field:
            p = p + (field,)
        raise WorkflowError(msg, file=located.file, line=located.line_of(p),
                            field=safeyaml.dotted(p) or None)

    # unique ids
    seen = set()
    for n in wf.walk():
        if n.id in seen:
            raise WorkflowError(f"duplicate node id '{n.id}'", file=located.file,
                                line=_second_line(wf, located, n.id), field="id")
        seen.add(n.id)

    known_models = set(configs.list_ids("models", config_dir))
    for n in wf.walk():
        for f in MODEL_FIELDS:
            m = getattr(n, f, None)
            if isinstance(m, str) and m not in known_models:
                fail(n.id, f"unknown model '{m}'; models: {', '.join(sorted(known_models))}", f)
        if isinstance(n, LoopNode) and wf.sla is not None:
            on_path = min(n.max_iterations, wf.sla.iterations or n.max_iterations)
            if on_path > MAX_LOOP_COPIES:
                fail(n.id, f"the SLA is checked on {on_path} iterations of this loop (its "
                           f"max_iterations, unless sla.iterations says fewer); at most "
                           f"{MAX_LOOP_COPIES} can be: set sla.iterations", "max_iterations")
        if isinstance(n, CodeNode) and n.source is not None:
            problem = code_source_problem(n.source)
            if problem:
                fail(n.id, problem, "source")
        if isinstance(n, BranchNode):
            total = sum(a.probability for a in n.arms)
            if abs(total - 1.0) > 1e-6:
                fail(n.id, f"branch probabilities sum to {total:g}, not 1", "arms")

    _check_scopes(wf.nodes, (), fail)
    _check_prefix(wf.nodes, False, fail)

    for n in wf.walk():
        if isinstance(n, SubAgentNode):
            if n.inline is not None:
                sub = n.inline
                _check(sub, located, base_dir, config_dir, stack, loaded)
            else:
                target = (base_dir / n.workflow).resolve()
                if str(target) in stack:
                    fail(n.id, f"sub-agent file '{n.workflow}' includes itself", "workflow")
                if not target.exists():
                    fail(n.id, f"sub-agent file '{n.workflow}' does not exist", "workflow")
                if str(target) not in loaded:
                    loaded[str(target)] = load(target, config_dir=config_dir, _stack=stack)
                sub = loaded[str(target)]
            n._resolved = sub


def code_source_problem(source: str) -> str | None:
    """Why a code node's Python `source` cannot run (a syntax error, no top-level `main`), or None.
    Parsing only: nothing in the source runs outside the sandbox."""
    import ast
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # invalid escape sequences and the like
            tree = ast.parse(source, "<source>")
    except SyntaxError as e:
        return f"Python syntax error in the source, line {e.lineno}: {e.msg}"
    except (ValueError, RecursionError, MemoryError) as e:
        return f"the source does not parse as Python: {type(e).__name__}"
    if not any(isinstance(s, ast.FunctionDef) and s.name == "main"
               for s in tree.body):
        return "the source must define a top-level function main(**inputs) returning a dict"
    return None


def _second_line(wf, located, node_id):
    count = 0
    for i, (nid, p) in enumerate(_all_paths(wf)):
        if nid == node_id:
            count += 1
            if count == 2:
                return located.line_of(p + ("id",))
    return None


def _all_paths(wf):
    def rec(nodes, prefix):
        for i, n in enumerate(nodes):
            p = prefix + (i,)
            yield n.id, p
            if isinstance(n, LoopNode):
                yield from rec(n.body, p + ("body",))
            elif isinstance(n, BranchNode):
                for a, arm in enumerate(n.arms):
                    yield from rec(arm.nodes, p + ("arms", a, "nodes"))
    yield from rec(wf.nodes, ("nodes",))


def _check_scopes(nodes, outer: tuple[frozenset, ...], fail, guards: tuple = ()) -> None:
    """References resolve to this scope or an enclosing one; no cycle within a scope. `guards`: per
    enclosing scope (its dependencies, the loop or branch holding these nodes, a topological index): a
    node inside cannot take that container, or an outer node depending on it, as input (it runs after)."""
    here = frozenset(n.id for n in nodes)
    visible = (here,) + outer
    inner_ids = {}
    for n in nodes:
        for child in _children(n):
            for cid in _ids_below(child):
                inner_ids[cid] = n.id
    for n in nodes:
        for i, ref in enumerate(n.inputs):
            if ref == n.id:
                fail(n.id, f"node '{n.id}' lists itself as an input", "inputs")
            if any(ref in deps and _depends_on(ref, container, deps, topo)
                   for deps, container, topo in guards):
                fail(n.id, f"input '{ref}' is, or runs after, the loop or branch holding '{n.id}'; "
                           "inside it, a node with no inputs takes the container's inputs", "inputs")
            if not any(ref in s for s in visible):
                if ref in inner_ids:
                    fail(n.id, f"input '{ref}' is inside '{inner_ids[ref]}'; refer to "
                               f"'{inner_ids[ref]}' instead", "inputs")
                fail(n.id, f"input '{ref}' does not name a node", "inputs")
    # cycles among this scope's nodes; the depth-first finishing order is a topological order
    deps = {n.id: [r for r in n.inputs if r in here] for n in nodes}
    state: dict[str, int] = {}
    order: list[str] = []
    for start in deps:
        if state.get(start):
            continue
        stack = [(start, iter(deps[start]))]
        trail = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                order.append(node)
                stack.pop()
                trail.pop()
            elif state.get(nxt) == 1:
                cyc = trail[trail.index(nxt):] + [nxt]
                fail(node, "cycle outside a loop: " + " -> ".join(reversed(cyc)) +
                     " (put repeated steps in a `loop` node)", "inputs")
            elif not state.get(nxt):
                state[nxt] = 1
                trail.append(nxt)
                stack.append((nxt, iter(deps[nxt])))
    topo = {node_id: i for i, node_id in enumerate(order)}
    for n in nodes:
        for child in _children(n):
            _check_scopes(child, visible, fail, guards + ((deps, n.id, topo),))


def _depends_on(node: str, container: str, deps: dict, topo: dict) -> bool:
    """Whether `node` is `container` or depends on it within their scope: a walk back through inputs
    that skips nodes ordered before the container (they cannot depend on it)."""
    stack, seen = [node], {node}
    while stack:
        x = stack.pop()
        if x == container:
            return True
        for y in deps[x]:
            if y not in seen and topo[y] >= topo[container]:
                seen.add(y)
                stack.append(y)
    return False


def _check_prefix(nodes, grows: bool, fail) -> None:
    """`prefix_shared: true` needs the innermost loop around it to grow its context (the shared prefix is
    that loop's previous iteration's context) and a self-hosted model (a hosted API's caching is its
    provider's)."""
    for n in nodes:
        if isinstance(n, LlmNode) and n.prefix_shared:
            if not grows:
                fail(n.id, "prefix_shared needs an enclosing loop with `context_growth_tokens` (the shared "
                           "prefix is the innermost loop's previous iteration's prompt and output); set it on "
                           "the loop, e.g. `context_growth_tokens: auto`", "prefix_shared")
            if n.hosted is not None:
                fail(n.id, "prefix_shared applies to self-hosted models; a hosted API caches prompts on its "
                           "provider's side", "prefix_shared")
        if isinstance(n, LoopNode):
            _check_prefix(n.body, n.context_growth_tokens not in (None, 0), fail)
        elif isinstance(n, BranchNode):
            for arm in n.arms:
                _check_prefix(arm.nodes, grows, fail)


def _children(n) -> list[list]:
    if isinstance(n, LoopNode):
        return [n.body]
    if isinstance(n, BranchNode):
        return [a.nodes for a in n.arms]
    return []


def _ids_below(nodes):
    for n in nodes:
        yield n.id
        for c in _children(n):
            yield from _ids_below(c)
