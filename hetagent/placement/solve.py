"""Solver driver: HiGHS through PuLP's public `pulp.HiGHS` first, CBC as fallback; time limit and gap.

The status comes from the solver's own solution status, never from PuLP's problem status alone (after
a time-out PuLP still says "Optimal"):
  optimal     proven optimal within the requested gap
  feasible    a plan exists but the solver stopped (time limit) before proving it; `gap` says how far
  infeasible  no plan satisfies the constraints
  no solution the solver stopped before finding any plan
The gap and bound come from HiGHS's own MIP callbacks (`callbackTuple`, `callbacksToActivate`), which
report the incumbent and the dual bound as the search runs. One solver, one thread of control, a fixed
random seed: the same inputs give the same plan. Solver banners never reach stdout (fd 1 is pointed at
stderr while solving).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass

import pulp

RANDOM_SEED = 0


@dataclass
class SolveInfo:
    status: str                 # optimal | feasible | infeasible | no solution
    gap: float | None           # relative MIP gap (fraction), an upper bound: optimal means <= the request
    seconds: float
    solver: str
    objective: float | None = None
    bound: float | None = None  # best proven lower bound on the objective

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


class _Progress:
    """What HiGHS's MIP callbacks report: the best incumbent and the best dual bound seen."""

    def __init__(self):
        self.objective = None
        self.bound = None

    def __call__(self, callback_type, message, data_out, data_in, user_data):
        bound = getattr(data_out, "mip_dual_bound", None)
        if bound is not None and math.isfinite(bound) and abs(bound) < 1e20:
            self.bound = bound if self.bound is None else max(self.bound, bound)
        obj = getattr(data_out, "mip_primal_bound", None)
        if obj is not None and math.isfinite(obj) and abs(obj) < 1e20:
            self.objective = obj if self.objective is None else min(self.objective, obj)


def _highs(time_limit_s, gap, threads, progress):
    import highspy
    cb = highspy.cb.HighsCallbackType
    return pulp.HiGHS(msg=False, timeLimit=time_limit_s, gapRel=gap, threads=threads,
                      callbackTuple=(progress, None),
                      callbacksToActivate=[cb.kCallbackMipImprovingSolution, cb.kCallbackMipLogging,
                                           cb.kCallbackMipInterrupt],
                      random_seed=RANDOM_SEED)


def solve(prob: pulp.LpProblem, time_limit_s: float = 30, gap: float = 1e-4,
          threads: int | None = None) -> SolveInfo:
    """Solve `prob` in place; HiGHS first, CBC if HiGHS is missing or fails."""
    last_err = None
    for name in ("highs", "cbc"):
        progress = _Progress()
        t0 = time.perf_counter()
        try:
            if name == "highs":
                solver = _highs(max(time_limit_s, 0.5), gap, threads, progress)
            else:
                solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=max(time_limit_s, 0.5), gapRel=gap,
                                           threads=threads)
            if not solver.available():
                continue
            with _stdout_to_stderr():
                prob.solve(solver)
        except (pulp.PulpSolverError, ImportError) as e:
            last_err = e
            continue
        return _info(prob, name, time.perf_counter() - t0, gap, progress)
    raise RuntimeError(f"no MILP solver worked: {last_err}")


def _info(prob, name, secs, gap_req, progress) -> SolveInfo:
    sol = prob.sol_status
    obj = pulp.value(prob.objective) if sol in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible) \
        else None
    bound = progress.bound
    if sol == pulp.LpSolutionOptimal:
        # HiGHS proved the plan within the requested gap; the callbacks' last bound may predate the proof
        g = _rel_gap(obj, bound)
        return SolveInfo("optimal", g if g is not None and g <= gap_req else gap_req, secs, name, obj, bound)
    if sol == pulp.LpSolutionIntegerFeasible:
        g = _rel_gap(obj, bound)
        if g is not None and g <= gap_req + 1e-12:
            return SolveInfo("optimal", g, secs, name, obj, bound)
        return SolveInfo("feasible", g, secs, name, obj, bound)
    if sol == pulp.LpSolutionInfeasible or prob.status == pulp.LpStatusInfeasible:
        return SolveInfo("infeasible", None, secs, name)
    return SolveInfo("no solution", None, secs, name)


def _rel_gap(obj, bound):
    if obj is None or bound is None:
        return None
    return max(0.0, (obj - bound) / max(abs(obj), 1e-9))


@dataclass
class Outcome:
    info: SolveInfo
    choice: dict                 # (pool id, phase) -> PoolOption; empty unless a plan was found
    evaluation: object | None    # milp.Evaluation of that choice
    prep: object                 # milp.Prepared
    model: object


def solve_problem(pb, restrict=None, time_limit_s: float = 30, gap: float = 1e-4,
                  threads: int | None = None, use_caps: bool = True, prep=None) -> Outcome:
    """prepare + build + solve + evaluate one milp.Problem (optionally with options restricted).
    The time limit covers preparing and building the model too. `prep`: a Prepared to reuse."""
    from hetagent.placement import milp
    t0 = time.perf_counter()
    prep = prep if prep is not None else milp.prepare(pb, restrict)
    if prep.uncovered():
        return Outcome(SolveInfo("infeasible", None, time.perf_counter() - t0, "presolve"), {}, None, prep,
                       None)
    model = milp.build(pb, prep, use_caps=use_caps)
    info = solve(model.prob, time_limit_s - (time.perf_counter() - t0), gap, threads)
    info.seconds = time.perf_counter() - t0
    if info.status not in ("optimal", "feasible"):
        return Outcome(info, {}, None, prep, model)
    choice = milp.choice_of(model)
    return Outcome(info, choice, milp.evaluate(pb, prep, choice, milp.servers_of(model)), prep, model)
