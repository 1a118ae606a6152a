"""Solver driver: HiGHS (through highspy) first, CBC as fallback; time limit and relative gap.

The status comes from the solver's own solution status, never from PuLP's problem status alone
(after a time-out PuLP still says "Optimal"):
  optimal     proven optimal within the requested gap
  feasible    a plan exists but the solver stopped (time limit) before proving it; `gap` says how far
  infeasible  no plan satisfies the constraints
  no solution the solver stopped before finding any plan
Solver banners never reach stdout (fd 1 is pointed at stderr while solving).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass

import pulp


@dataclass
class SolveInfo:
    status: str                 # optimal | feasible | infeasible | no solution
    gap: float | None           # relative MIP gap (fraction); 0 when optimal
    seconds: float
    solver: str
    objective: float | None = None

    def to_json(self) -> dict:
        return {"status": self.status, "gap": self.gap, "seconds": round(self.seconds, 4)}


@contextlib.contextmanager
def _stdout_to_stderr():
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        _c_fflush()
        os.dup2(saved, 1)
        os.close(saved)


def _c_fflush():
    try:
        import ctypes
        ctypes.CDLL(None).fflush(None)
    except Exception:
        pass


class _HiGHS(pulp.HiGHS):
    """pulp.HiGHS (highspy) plus a MIP start: {variable: value} for some variables; HiGHS completes it."""

    def __init__(self, start=None, **kw):
        super().__init__(**kw)
        self.start = start

    def actualSolve(self, lp, callback=None):
        if not self.start:
            return super().actualSolve(lp)
        import numpy as np
        self.createAndConfigureSolver(lp)
        self.buildSolverModel(lp)
        idx = np.array([v.index for v in self.start], dtype=np.int32)
        lp.solverModel.setSolution(len(idx), idx, np.array([float(x) for x in self.start.values()]))
        self.callSolver(lp)
        status, sol_status = self.findSolutionValues(lp)
        lp.assignStatus(status, sol_status)
        return status


def _solvers(time_limit_s, gap, threads, start=None):
    """(name, factory) in order of preference; a solver is only built when tried."""
    yield "highs", lambda: _HiGHS(start, msg=False, timeLimit=time_limit_s, gapRel=gap, threads=threads)
    yield "cbc", lambda: pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, gapRel=gap, threads=threads)


def solve(prob: pulp.LpProblem, time_limit_s: float = 30, gap: float = 1e-4,
          threads: int | None = None, start: dict | None = None) -> SolveInfo:
    """Solve `prob` in place; HiGHS first, CBC if HiGHS is missing or fails. `start`: a MIP start."""
    last_err = None
    for name, factory in _solvers(max(time_limit_s, 0.5), gap, threads, start):
        t0 = time.perf_counter()
        try:
            solver = factory()
            if not solver.available():
                continue
            with _stdout_to_stderr():
                prob.solve(solver)
        except pulp.PulpSolverError as e:
            last_err = e
            continue
        secs = time.perf_counter() - t0
        return _info(prob, name, secs, gap)
    raise RuntimeError(f"no MILP solver worked: {last_err}")


def _info(prob, name, secs, gap_req) -> SolveInfo:
    sol = prob.sol_status
    obj = pulp.value(prob.objective) if sol in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible) \
        else None
    if sol == pulp.LpSolutionOptimal:
        return SolveInfo("optimal", _gap(prob, name, 0.0), secs, name, obj)
    if sol == pulp.LpSolutionIntegerFeasible:
        g = _gap(prob, name, None)
        if g is not None and g <= gap_req + 1e-12:
            return SolveInfo("optimal", g, secs, name, obj)
        return SolveInfo("feasible", g, secs, name, obj)
    if sol == pulp.LpSolutionInfeasible or prob.status == pulp.LpStatusInfeasible:
        return SolveInfo("infeasible", None, secs, name)
    return SolveInfo("no solution", None, secs, name)


def _gap(prob, name, default):
    if name != "highs" or getattr(prob, "solverModel", None) is None:
        return default
    try:
        info = prob.solverModel.getInfo()
        g = float(info.mip_gap)
    except Exception:
        return default
    if g != g or g > 1e20:            # nan / inf: an LP, or no bound
        return default
    return max(0.0, g)


@dataclass
class Outcome:
    info: SolveInfo
    choice: dict                 # (g, op) -> DeviceOption; empty unless a plan was found
    evaluation: object | None    # milp.Evaluation of that choice
    prep: object                 # milp.Prepared
    model: object


def solve_problem(pb, restrict=None, time_limit_s: float = 30, gap: float = 1e-4,
                  threads: int | None = None, use_caps: bool = True, start_from=None) -> Outcome:
    """prepare + build + solve + evaluate one milp.Problem (optionally with options restricted).
    start_from: an Outcome whose solution is kept reachable and given to the solver as a MIP start."""
    from hetagent.placement import milp
    prep = milp.prepare(pb, restrict, keep=start_from.choice if start_from is not None else None)
    if any(not opts for table in prep.options for opts in table.values()):
        return Outcome(SolveInfo("infeasible", None, 0.0, "presolve"), {}, None, prep, None)
    t0 = time.perf_counter()
    if start_from is not None and start_from.evaluation is not None:
        start = (start_from.choice, start_from.evaluation.counts)
    else:
        start = _decomposed_start(pb, prep, time_limit_s, threads) \
            if prep.thinned and len(pb.graphs) > 1 and pb.objective != "makespan" else None
    model = milp.build(pb, prep, use_caps=use_caps)
    start_vars = None
    if start is not None:
        choice, counts = start
        start_vars = {v: 1.0 if choice.get((gi, op)) == o else 0.0 for (gi, op, o), v in model.x.items()}
        start_vars.update({v: float(counts.get(d, 0)) for d, v in model.n.items()})
    info = solve(model.prob, time_limit_s - (time.perf_counter() - t0), gap, threads, start_vars)
    info.seconds = time.perf_counter() - t0
    if info.status not in ("optimal", "feasible"):
        return Outcome(info, {}, None, prep, model)
    choice = milp.choice_of(model)
    return Outcome(info, choice, milp.evaluate(pb, prep, choice), prep, model)


def _decomposed_start(pb, prep, time_limit_s, threads):
    """A MIP start for several workflows: each workflow placed alone (a quarter of the time limit in all),
    then pooled. None if any workflow fails or the pooled fleet breaks an inventory cap."""
    from dataclasses import replace
    from hetagent.placement import milp
    choice, budget = {}, time_limit_s / 4 / len(pb.graphs)
    for gi, g in enumerate(pb.graphs):
        sub = replace(pb, graphs=[g], tables=[pb.tables[gi]])
        sp = milp.Prepared([prep.options[gi]], [prep.transparent[gi]],
                           [replace(e, g=0) for e in prep.edges if e.g == gi], [prep.dropped[gi]], True)
        m = milp.build(sub, sp)
        if solve(m.prob, budget, 0.01, threads).status not in ("optimal", "feasible"):
            return None
        choice.update({(gi, op): o for (_, op), o in milp.choice_of(m).items()})
    ev = milp.evaluate(pb, prep, choice)
    if any(n > pb.caps.get(d, n) for d, n in ev.counts.items()):
        return None
    return choice, ev.counts
