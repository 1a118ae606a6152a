"""The structure traces share: each agent scope's steps read as a sequence of elements, sequences of
all traces merged into blocks (the workflow's shape before it is written as nodes).

Per scope and trace, steps become elements: an LLM call (L), a tool step (T: one tool, or several run
in parallel), a sub-agent (A), another parallel group (X), and a run of LLM-then-tools cycles
`(L T)+`, which is an agent loop with as many iterations as cycles. Sequences of all traces are merged:
where every trace has the same element keys (L; T with its tool names; A with its agent name; loop)
they merge position by position; where they differ, the common prefix and suffix stay shared and the
middles become a branch whose arms are the distinct middles, with the share of traces that took each
(an arm may be empty). In a loop, the tools called in its iterations become one tool node when every
iteration calls the same ones, else a branch with the observed share of each.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hetagent.workflow.importers.trace_calls import Call, Step


# ---- blocks: the merged shape ----------------------------------------------------------------------

@dataclass
class LlmBlock:
    calls: list[Call]                       # one per occurrence (trace, or loop iteration)


@dataclass
class ToolBlock:
    name: str
    calls: list[Call]


@dataclass
class AgentBlock:
    name: str
    calls: list[Call]
    body: list                              # blocks of the agent's own scope


@dataclass
class Parallel:
    members: list                           # blocks run side by side


@dataclass
class Branch:
    arms: list["Arm"]
    reached: int                            # occurrences that reached the branch


@dataclass
class Arm:
    name: str
    count: int
    blocks: list


@dataclass
class Loop:
    iterations: list[int]                   # per occurrence (trace)
    body: list                              # [LlmBlock, tool block or Branch of tool blocks]
    sequences: list = field(default_factory=list)   # per occurrence: its LLM calls in iteration order


# ---- elements: one trace's scope ----------------------------------------------------------------

@dataclass
class _El:
    key: tuple
    step: Step | None = None
    pairs: list[tuple[Step, Step]] = field(default_factory=list)   # a loop's (L, T) iterations


def elements(steps: list[Step]) -> list[_El]:
    out: list[_El] = []
    i = 0
    while i < len(steps):
        if i + 1 < len(steps) and steps[i].kind == "L" and steps[i + 1].kind == "T":
            el = _El(("loop",))
            while i + 1 < len(steps) and steps[i].kind == "L" and steps[i + 1].kind == "T":
                el.pairs.append((steps[i], steps[i + 1]))
                i += 2
            out.append(el)
            continue
        s = steps[i]
        out.append(_El(("L",) if s.kind == "L" else s.label, step=s))
        i += 1
    return out


def merge(seqs: list[list[_El]]) -> list:
    """Blocks for the element sequences of several occurrences of one scope."""
    if not seqs:
        return []
    keys = [tuple(e.key for e in s) for s in seqs]
    if len(set(keys)) == 1:
        return [_merge_position([s[i] for s in seqs]) for i in range(len(keys[0]))]
    p = 0
    while all(len(k) > p for k in keys) and len({k[p] for k in keys}) == 1:
        p += 1
    q = 0
    while all(len(k) - p > q for k in keys) and len({k[len(k) - 1 - q] for k in keys}) == 1:
        q += 1
    head = [_merge_position([s[i] for s in seqs]) for i in range(p)]
    tail = [_merge_position([s[len(s) - q + i] for s in seqs]) for i in range(q)]
    groups: dict[tuple, list[list[_El]]] = {}
    for s, k in zip(seqs, keys):
        groups.setdefault(k[p:len(k) - q], []).append(s[p:len(s) - q])
    arms = []
    for mid, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), _arm_name(kv[0]))):
        arms.append(Arm(_arm_name(mid), len(members), merge(members)))
    return head + [Branch(arms, len(seqs))] + tail


def _arm_name(mid: tuple) -> str:
    if not mid:
        return "none"
    parts = []
    for k in mid[:4]:
        if k == ("L",):
            parts.append("llm")
        elif k == ("loop",):
            parts.append("loop")
        else:
            parts.append("+".join(str(x[1]) for x in k[1:]) if len(k) > 1 else k[0])
    return " -> ".join(parts) + (" ..." if len(mid) > 4 else "")


def _merge_position(els: list[_El]) -> object:
    key = els[0].key
    if key == ("loop",):
        return _loop(els)
    steps = [e.step for e in els]
    return _group(steps)


def _group(steps: list[Step]):
    """One block for a step that every occurrence has (same label): its calls matched by label."""
    first = steps[0]
    if len(first.calls) == 1:
        return _single([s.calls[0] for s in steps])
    slots: list[list[Call]] = []
    for s in steps:
        order = sorted(s.calls, key=lambda c: (c.label, c.span.start))
        for j, c in enumerate(order):
            if j == len(slots):
                slots.append([])
            slots[j].append(c)
    return Parallel([_single(calls) for calls in slots])


def _single(calls: list[Call]):
    c = calls[0]
    if c.kind == "llm":
        return LlmBlock(calls)
    if c.kind == "tool":
        return ToolBlock(c.name, calls)
    inner = [elements(_unwrap(x.steps)) for x in calls]
    return AgentBlock(c.name, calls, merge(inner))


def _unwrap(steps: list[Step]) -> list[Step]:
    while len(steps) == 1 and steps[0].kind == "A":
        steps = steps[0].calls[0].steps
    return steps


def _loop(els: list[_El]) -> Loop:
    llm_calls = [p[0].calls[0] for e in els for p in e.pairs]
    tool_steps = [p[1] for e in els for p in e.pairs]
    labels = Counter(s.label for s in tool_steps)
    if len(labels) == 1:
        tools = _group(tool_steps)
    else:
        arms = []
        for label, n in sorted(labels.items(), key=lambda kv: (-kv[1], kv[0])):
            members = [s for s in tool_steps if s.label == label]
            arms.append(Arm("+".join(str(x[1]) for x in label[1:]), n, [_group(members)]))
        tools = Branch(arms, len(tool_steps))
    return Loop([len(e.pairs) for e in els], [LlmBlock(llm_calls), tools],
                [[p[0].calls[0] for p in e.pairs] for e in els])
