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
import math
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
    phases: dict | None = None     # LP-guided strategy: lp_s, lp_bound, sub_s, sub_objective, full_s

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
    """pulp.HiGHS (highspy) plus a MIP start ({variable: value} for some variables; HiGHS completes it) and,
    for large models, an LP-guided first phase (`groups`: per operator {device: [its option variables]}):

      1. the LP relaxation: a valid lower bound on the optimum;
      2. a sub-MIP where each operator keeps only the devices its LP solution uses (plus the start's):
         small, and solved to the requested gap within part of the time;
      3. the full MIP, started from the best plan so far, for the time left.

    The reported gap is (best plan - best proven bound) / best plan, the bound being the larger of the LP
    relaxation's and HiGHS's own dual bound of the full model: never a bound of a restricted model."""

    LP_SHARE = 0.35          # most of the time limit the LP relaxation may take
    LAG_SHARE = 0.4          # the LP and the Lagrangian bound together stop by this share of the limit
    SUB_SHARE = 0.5          # most of the remaining time the restricted sub-MIP may take

    def __init__(self, start=None, groups=None, coupling=None, **kw):
        super().__init__(**kw)
        self.start = start
        self.groups = groups
        self.coupling = coupling
        self.phases = {}

    def actualSolve(self, lp, callback=None):
        if not self.start and not self.groups:
            return super().actualSolve(lp)
        import numpy as np
        self.createAndConfigureSolver(lp)
        self.buildSolverModel(lp)
        h = lp.solverModel
        t0 = time.perf_counter()
        limit = float(self.timeLimit or 1e9)
        start = None
        if self.start:
            start = np.zeros(h.getNumCol())
            have = np.zeros(h.getNumCol(), bool)
            for v, val in self.start.items():
                start[v.index], have[v.index] = float(val), True
        lb, best = None, None            # proven lower bound of the full model; best (objective, values)
        if self.groups:
            lb, best = self._lp_guided(h, np, t0, limit, start)
            gap_now = _rel_gap(best[0] if best else None, lb)
            if gap_now is not None and gap_now <= (self.gapRel or 0) + 1e-12:
                self._load(h, np, best[1], lp)
                self.phases["full"] = "skipped: the sub-MIP plan is within the gap of the LP bound"
                lp._het_gap = gap_now
                return lp.status
        left = limit - (time.perf_counter() - t0)
        h.setOptionValue("time_limit", max(left, 0.2))
        h.setOptionValue("solve_relaxation", False)
        if best is not None:
            h.setSolution(highspy_solution(h, best[1]))
        elif start is not None:
            idx = np.nonzero(have)[0].astype(np.int32)
            h.setSolution(len(idx), idx, start[idx])
        t1 = time.perf_counter()
        self.callSolver(lp)
        self.phases["full_s"] = time.perf_counter() - t1
        status, sol_status = self.findSolutionValues(lp)
        if not self.groups:
            lp.assignStatus(status, sol_status)
            return status
        info = h.getInfo()
        bound = info.mip_dual_bound if h.getModelStatus() != highspy_status("kInfeasible") else None
        if bound is not None and (math.isnan(bound) or abs(bound) > 1e20):
            bound = None
        bound = max([b for b in (lb, bound) if b is not None], default=None)
        found = sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible)
        obj = info.objective_function_value if found else None
        if best is not None and (obj is None or obj > best[0] + 1e-9):
            self._load(h, np, best[1], lp)      # the full MIP found nothing better in time: keep the plan
            lp._het_gap = _rel_gap(best[0], bound)
            return lp.status
        lp.assignStatus(status, sol_status)
        lp._het_gap = _rel_gap(obj, bound) if sol_status != pulp.LpSolutionOptimal else None
        return status

    def _lp_guided(self, h, np, t0, limit, start):
        import highspy
        lp0 = h.getLp()
        lower, upper = np.array(lp0.col_lower_), np.array(lp0.col_upper_)
        h.setOptionValue("solve_relaxation", True)
        h.setOptionValue("time_limit", max(limit * self.LP_SHARE, 0.2))
        h.run()
        self.phases["lp_s"] = time.perf_counter() - t0
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            h.setOptionValue("solve_relaxation", False)
            return None, None
        lb = h.getInfo().objective_function_value
        x = np.array(h.getSolution().col_value)
        self.phases["lp_bound"] = lb
        if self.coupling:
            t1 = time.perf_counter()
            lag = _lagrangian_bound(h, np.array([v.index for v in self.coupling]),
                                    t1 + max(limit * self.LAG_SHARE - (t1 - t0), 0.0))
            self.phases["lagrangian_s"] = time.perf_counter() - t1
            self.phases["lagrangian_bound"] = lag
            if lag is not None and lag > lb:
                lb = lag
        off = []
        for by_dev in self.groups:
            for vs in by_dev.values():
                idx = [v.index for v in vs]
                used = x[idx].sum() > 1e-6 or (start is not None and start[idx].sum() > 0.5)
                if not used:
                    off.extend(idx)
        off = np.array(sorted(off), dtype=np.int32)
        h.setOptionValue("solve_relaxation", False)
        best = None
        if len(off):
            h.changeColsBounds(len(off), off, np.zeros(len(off)), np.zeros(len(off)))
        if start is not None:
            h.setSolution(highspy_solution(h, start))
        left = limit - (time.perf_counter() - t0)
        h.setOptionValue("time_limit", max(left * self.SUB_SHARE, 0.2))
        t1 = time.perf_counter()
        h.run()
        self.phases["sub_s"] = time.perf_counter() - t1
        info = h.getInfo()
        if info.primal_solution_status == 2:          # kSolutionStatusFeasible
            best = (info.objective_function_value, np.array(h.getSolution().col_value))
            self.phases["sub_objective"] = best[0]
        if len(off):
            h.changeColsBounds(len(off), off, lower[off], upper[off])
        return lb, best

    def _load(self, h, np, values, lp):
        """Put `values` (a full column vector) into the PuLP variables as the solution."""
        for var in lp.variables():
            var.varValue = float(values[var.index])
        lp.assignStatus(pulp.LpStatusOptimal, pulp.LpSolutionIntegerFeasible)


def _lagrangian_bound(h, ncols, deadline, gap=1e-6):
    """A lower bound of the full MIP by Lagrangian relaxation, with the LP relaxation's row duals as the
    multipliers of every row that holds a device count n[d] (pooled throughput, memory, per-operator
    cuts). What remains splits into one small MIP per workflow (its options and its SLA), each solved
    alone; their dual bounds plus the multipliers' constant bound the optimum from below (weak duality),
    at least as tightly as the LP, since each workflow's own choices are kept integer.
    h: a Highs whose LP relaxation was just solved. Returns the bound, or None (time ran out, or a
    multiplier would make the bound unbounded)."""
    import highspy
    import numpy as np
    from scipy.sparse import csc_matrix
    from scipy.sparse.csgraph import connected_components
    INF = 1e20
    lp = h.getLp(); sol = h.getSolution()
    nc, nr = lp.num_col_, lp.num_row_
    A = csc_matrix((np.array(lp.a_matrix_.value_), np.array(lp.a_matrix_.index_), np.array(lp.a_matrix_.start_)), shape=(nr, nc))
    c = np.array(lp.col_cost_); cl, cu = np.array(lp.col_lower_), np.array(lp.col_upper_)
    rl, ru = np.array(lp.row_lower_), np.array(lp.row_upper_)
    integ = np.array([v == highspy.HighsVarType.kInteger for v in lp.integrality_], dtype=bool)
    if len(integ) != nc:                # an LP: no integrality recorded
        integ = np.zeros(nc, bool)
    y = np.array(sol.row_dual)
    Ar = A.tocsr()
    R = np.zeros(nr, bool)
    R[np.unique(A[:, ncols].tocoo().row)] = True
    yR = np.where(R, y, 0.0)
    # valid multipliers for >= rows (lower finite): y >= 0 at lower; <= rows: y <= 0 at upper
    rhs = np.where(yR > 0, rl, np.where(yR < 0, ru, 0.0))
    bad = np.abs(rhs) >= INF
    yR[bad] = 0.0; rhs[bad] = 0.0
    cmod = c - Ar.T @ yR
    const = float(yR @ rhs) + lp.offset_
    keep = ~R
    Ak = Ar[keep].tocsc()
    # components over columns linked by kept rows
    G = (Ak.T @ Ak) if Ak.nnz else None
    _, lab = connected_components(abs(G) > 0 if G is not None else np.zeros((nc, nc)), directed=False)
    colrows = Ak.tocsr()
    rows_kept = np.nonzero(keep)[0]
    row_lab = np.full(len(rows_kept), -1)
    cr = colrows.tocoo()
    row_lab[cr.row] = lab[cr.col]
    incol = np.diff(Ak.indptr) > 0
    total = const
    xsol = np.where(cmod >= -1e-7, cl, cu)
    # free columns (no kept row): at the bound its modified cost prefers
    free = ~incol
    if np.any(np.abs(xsol[free]) >= INF):
        return None
    total += float(cmod[free] @ xsol[free])
    comps = {}
    for j in np.nonzero(incol)[0]:
        comps.setdefault(lab[j], []).append(j)
    rows_by = {}
    for k, r in enumerate(rows_kept):
        rows_by.setdefault(row_lab[k], []).append(k)
    ok = True
    for L, cols in comps.items():
        cols, rws = np.array(cols), np.array(rows_by.get(L, []), dtype=np.int64)
        sub = Ak[rws][:, cols].tocsc()
        m = highspy.HighsLp()
        m.num_col_, m.num_row_ = len(cols), len(rws)
        m.col_cost_ = cmod[cols]; m.col_lower_ = cl[cols]; m.col_upper_ = cu[cols]
        m.row_lower_ = rl[rows_kept[rws]]; m.row_upper_ = ru[rows_kept[rws]]
        sub.sort_indices()
        am = highspy.HighsSparseMatrix(); am.format_ = highspy.MatrixFormat.kColwise
        am.num_col_, am.num_row_ = len(cols), len(rws)
        am.start_ = sub.indptr.astype(np.int32); am.index_ = sub.indices.astype(np.int32); am.value_ = sub.data.astype(float)
        m.a_matrix_ = am
        m.integrality_ = [highspy.HighsVarType.kInteger if integ[j] else highspy.HighsVarType.kContinuous for j in cols]
        s = highspy.Highs()
        s.setOptionValue("output_flag", False)
        s.setOptionValue("mip_rel_gap", gap)
        if deadline - time.perf_counter() < 0.05:
            return None
        s.setOptionValue("time_limit", deadline - time.perf_counter())
        s.passModel(m)
        s.run()
        inf = s.getInfo()
        b = inf.mip_dual_bound if any(integ[cols]) else inf.objective_function_value
        if inf.primal_solution_status != 2 or b is None or abs(b) > INF:
            ok = False
            break
        total += b
    return total if ok else None


def _rel_gap(obj, bound):
    if obj is None or bound is None:
        return None
    return max(0.0, (obj - bound) / max(abs(obj), 1e-9))


def highspy_status(name):
    import highspy
    return getattr(highspy.HighsModelStatus, name)


def highspy_solution(h, values):
    import highspy
    sol = highspy.HighsSolution()
    sol.col_value = list(map(float, values))
    sol.value_valid = True
    return sol


def _solvers(time_limit_s, gap, threads, start=None, groups=None, coupling=None):
    """(name, factory) in order of preference; a solver is only built when tried."""
    yield "highs", lambda: _HiGHS(start, groups, coupling, msg=False, timeLimit=time_limit_s, gapRel=gap, threads=threads)
    yield "cbc", lambda: pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, gapRel=gap, threads=threads)


def solve(prob: pulp.LpProblem, time_limit_s: float = 30, gap: float = 1e-4,
          threads: int | None = None, start: dict | None = None, groups: list | None = None,
          coupling: list | None = None) -> SolveInfo:
    """Solve `prob` in place; HiGHS first, CBC if HiGHS is missing or fails. `start`: a MIP start.
    `groups`: per operator {device: [option variables]}: use the LP-guided strategy (large models);
    `coupling`: the variables shared by all workflows (device counts), for the Lagrangian bound."""
    last_err = None
    prob._het_gap = None
    for name, factory in _solvers(max(time_limit_s, 0.5), gap, threads, start, groups, coupling):
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
        info = _info(prob, name, secs, gap)
        info.phases = dict(getattr(solver, "phases", {}) or {}) or None
        return info
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
    g = getattr(prob, "_het_gap", None)      # set by the LP-guided strategy: against the full model's bound
    if g is not None:
        return g
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


LP_GUIDED_MIN_OPTIONS = 3000    # above this many binaries: LP relaxation, LP-guided sub-MIP, then the full MIP


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
    large = sum(len(o) for t in prep.options for o in t.values()) > LP_GUIDED_MIN_OPTIONS \
        and pb.objective != "makespan"
    if start_from is not None and start_from.evaluation is not None:
        start = (start_from.choice, start_from.evaluation.counts)
    else:
        start = None
    model = milp.build(pb, prep, use_caps=use_caps)
    start_vars = None
    if start is not None:
        choice, counts = start
        start_vars = {v: 1.0 if choice.get((gi, op)) == o else 0.0 for (gi, op, o), v in model.x.items()}
        start_vars.update({v: float(counts.get(d, 0)) for d, v in model.n.items()})
    groups = None
    if large:
        by: dict = {}
        for (gi, op, o), v in model.x.items():
            by.setdefault((gi, op), {}).setdefault(o.device, []).append(v)
        groups = list(by.values())
    # The Lagrangian bound (solve(..., coupling=)) is left off: on 2 loaded cores it took 10-11 s at 1000
    # operators for a bound 1.2% above the LP's, time the sub-MIP needs more (docs/placement.md).
    info = solve(model.prob, time_limit_s - (time.perf_counter() - t0), gap, threads, start_vars, groups)
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
