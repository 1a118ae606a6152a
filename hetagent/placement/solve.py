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

import numpy as np
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
    FIX_INTEGRAL = True      # the sub-MIP fixes the operators whose LP choice is already integral

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
        best = None
        dec = None

        def better(cand):
            nonlocal best
            if cand is not None and (best is None or cand[0] < best[0] - 1e-9):
                best = cand
                return True
            return False

        if self.coupling:
            t1 = time.perf_counter()
            dec = _Decomposition(h, np.array([v.index for v in self.coupling]))
            if len(dec.blocks) < 2:
                dec = None
            else:
                if start is not None:
                    dec.add(start)
                lag, _ = dec.price(np.array(h.getSolution().row_dual),
                                   t1 + max(limit * self.LAG_SHARE - (t1 - t0), 0.0), 1e-4)
                self.phases["lagrangian_s"] = time.perf_counter() - t1
                self.phases["lagrangian_bound"] = lag
                if lag is not None and lag > lb:
                    lb = lag
                t2 = time.perf_counter()
                if better(dec.master(t2 + max(limit - (t2 - t0), 0.0) * 0.1, self.gapRel or 1e-4)):
                    self.phases["master_objective"] = best[0]
                self.phases["master_s"] = time.perf_counter() - t2
        plan = best[1] if best is not None else start
        off, fixed = [], 0
        for by_dev in self.groups:
            # an operator the LP already places on one option keeps only it (and the plan's option)
            opts = [v.index for vs in by_dev.values() for v in vs]
            one = [j for j in opts if x[j] >= 1 - 1e-6] if self.FIX_INTEGRAL else []
            if one:
                fixed += 1
                keep = set(one) | ({j for j in opts if plan[j] > 0.5} if plan is not None else set())
                off.extend(j for j in opts if j not in keep)
                continue
            for vs in by_dev.values():
                idx = [v.index for v in vs]
                used = x[idx].sum() > 1e-6 or (plan is not None and plan[idx].sum() > 0.5)
                if not used:
                    off.extend(idx)
        self.phases["lp_integral_ops"] = fixed
        off = np.array(sorted(off), dtype=np.int32)
        h.setOptionValue("solve_relaxation", False)
        if len(off):
            h.changeColsBounds(len(off), off, np.zeros(len(off)), np.zeros(len(off)))
        if plan is not None:
            h.setSolution(highspy_solution(h, plan))
        left = limit - (time.perf_counter() - t0)
        h.setOptionValue("time_limit", max(left * self.SUB_SHARE, 0.2))
        t1 = time.perf_counter()
        h.run()
        self.phases["sub_s"] = time.perf_counter() - t1
        info = h.getInfo()
        if info.primal_solution_status == 2:          # kSolutionStatusFeasible
            sub = (info.objective_function_value, np.array(h.getSolution().col_value))
            self.phases["sub_objective"] = sub[0]
            better(sub)
            if dec is not None:        # mix: each workflow takes its sub-MIP or its other candidates
                dec.add(sub[1])
                t2 = time.perf_counter()
                if better(dec.master(t2 + max(limit - (t2 - t0), 0.0) * 0.2, self.gapRel or 1e-4)):
                    self.phases["master2_objective"] = best[0]
                self.phases["master2_s"] = time.perf_counter() - t2
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
    d = _Decomposition(h, ncols)
    bound, _ = d.price(np.asarray(h.getSolution().row_dual), deadline, gap)
    return bound


class _Decomposition:
    """The placement model split at its coupling rows (every row holding a device count n[d]: pooled
    throughput, memory, per-operator cuts). Without them the model falls apart into independent blocks,
    one per workflow (its options, start times, transfers, SLA). Used two ways:

    - price(y): Lagrangian relaxation with multipliers y on the coupling rows. Each block is a small MIP
      with costs c - A^T y; the sum of their dual bounds plus y.rhs is a lower bound of the FULL model
      (weak duality; valid for any sign-feasible y). Each block's solution is also kept as a candidate
      placement of that workflow (a column).
    - master(): one binary per candidate (one candidate per block), the device counts and the coupling
      rows with each candidate's exact contribution. Any master solution is a feasible plan of the full
      model (each candidate satisfies its own block's rows; the coupling rows are linear), so its value
      is an honest upper bound. Its LP relaxation's duals give the next multipliers (column generation).
    Identical blocks (identical workflows: same operators, rates and SLA give identical rows and costs)
    are priced once."""

    def __init__(self, h, ncols):
        import highspy
        from scipy.sparse import csc_matrix
        from scipy.sparse.csgraph import connected_components
        lp = h.getLp()
        nc, nr = lp.num_col_, lp.num_row_
        A = csc_matrix((np.array(lp.a_matrix_.value_), np.array(lp.a_matrix_.index_),
                        np.array(lp.a_matrix_.start_)), shape=(nr, nc))
        self.nc, self.nr = nc, nr
        self.c = np.array(lp.col_cost_)
        self.cl, self.cu = np.array(lp.col_lower_), np.array(lp.col_upper_)
        self.rl, self.ru = np.array(lp.row_lower_), np.array(lp.row_upper_)
        integ = np.array([v == highspy.HighsVarType.kInteger for v in lp.integrality_], dtype=bool)
        self.integ = integ if len(integ) == nc else np.zeros(nc, bool)
        self.offset = lp.offset_
        Ar = A.tocsr()
        R = np.zeros(nr, bool)
        R[np.unique(A[:, ncols].tocoo().row)] = True
        self.R = R
        self.AR = Ar[R].tocsr()                  # coupling rows
        self.AT = Ar.T.tocsr()
        keep = ~R
        Ak = Ar[keep].tocsc()
        G = (Ak.T @ Ak) if Ak.nnz else None
        _, lab = connected_components(abs(G) > 0 if G is not None else np.zeros((nc, nc)), directed=False)
        rows_kept = np.nonzero(keep)[0]
        row_lab = np.full(len(rows_kept), -1)
        cr = Ak.tocoo()
        row_lab[cr.row] = lab[cr.col]
        incol = np.diff(Ak.indptr) > 0
        self.free = np.nonzero(~incol)[0]
        comps, rows_by = {}, {}
        for j in np.nonzero(incol)[0]:
            comps.setdefault(lab[j], []).append(j)
        for k, r in enumerate(rows_kept):
            rows_by.setdefault(row_lab[k], []).append(k)
        self.blocks = []       # (cols, Highs with the block's rows, structural key)
        for L, cols in comps.items():
            cols = np.array(cols)
            rws = np.array(rows_by.get(L, []), dtype=np.int64)
            sub = Ak[rws][:, cols].tocsc()
            sub.sort_indices()
            m = highspy.HighsLp()
            m.num_col_, m.num_row_ = len(cols), len(rws)
            m.col_cost_ = self.c[cols]
            m.col_lower_, m.col_upper_ = self.cl[cols], self.cu[cols]
            m.row_lower_, m.row_upper_ = self.rl[rows_kept[rws]], self.ru[rows_kept[rws]]
            am = highspy.HighsSparseMatrix()
            am.format_ = highspy.MatrixFormat.kColwise
            am.num_col_, am.num_row_ = len(cols), len(rws)
            am.start_ = sub.indptr.astype(np.int32)
            am.index_ = sub.indices.astype(np.int32)
            am.value_ = sub.data.astype(float)
            m.a_matrix_ = am
            m.integrality_ = [highspy.HighsVarType.kInteger if self.integ[j] else highspy.HighsVarType.kContinuous
                              for j in cols]
            key = hash((sub.indptr.tobytes(), sub.indices.tobytes(), sub.data.tobytes(),
                        self.cl[cols].tobytes(), self.cu[cols].tobytes(), self.integ[cols].tobytes(),
                        self.rl[rows_kept[rws]].tobytes(), self.ru[rows_kept[rws]].tobytes()))
            self.blocks.append((cols, m, key))
        self.cands = [[] for _ in self.blocks]     # per block: list of candidate value vectors
        self._seen = [set() for _ in self.blocks]
        self._solver = {}

    def add(self, values, tol=1e-6):
        """Add each block's part of a full solution vector as a candidate."""
        for b, (cols, _, _) in enumerate(self.blocks):
            v = np.asarray(values)[cols]
            v = np.where(self.integ[cols], np.round(v), v)
            sig = v.round(6).tobytes()
            if sig not in self._seen[b]:
                self._seen[b].add(sig)
                self.cands[b].append(v)

    def _multipliers(self, y):
        yR = np.where(self.R, y, 0.0)
        rhs = np.where(yR > 0, self.rl, np.where(yR < 0, self.ru, 0.0))
        bad = np.abs(rhs) >= 1e20
        yR[bad] = 0.0
        rhs[bad] = 0.0
        return yR, rhs

    def price(self, y, deadline, gap=1e-6):
        """Lagrangian bound for row multipliers y (a full row vector; only coupling rows are used) and one
        candidate per block. Returns (bound or None, number of new candidates)."""
        import highspy
        yR, rhs = self._multipliers(np.asarray(y, float))
        cmod = self.c - self.AT @ yR
        total = float(yR @ rhs) + self.offset
        xf = np.where(cmod[self.free] >= -1e-7, self.cl[self.free], self.cu[self.free])
        ok = not np.any(np.abs(xf) >= 1e20)
        if ok:
            total += float(cmod[self.free] @ xf)
        memo, new = {}, 0
        for b, (cols, m, key) in enumerate(self.blocks):
            k2 = (key, cmod[cols].round(12).tobytes())
            if k2 not in memo:
                if deadline - time.perf_counter() < 0.05:
                    return None, new
                s = self._solver.get(b)
                if s is None:
                    s = highspy.Highs()
                    s.setOptionValue("output_flag", False)
                    m.col_cost_ = cmod[cols]
                    s.passModel(m)
                    self._solver[b] = s
                else:
                    s.changeColsCost(len(cols), np.arange(len(cols), dtype=np.int32), cmod[cols])
                s.setOptionValue("mip_rel_gap", gap)
                s.setOptionValue("time_limit", max(deadline - time.perf_counter(), 0.05))
                s.run()
                inf = s.getInfo()
                bnd = inf.mip_dual_bound if any(self.integ[cols]) else inf.objective_function_value
                sol = np.array(s.getSolution().col_value) if inf.primal_solution_status == 2 else None
                if bnd is None or abs(bnd) > 1e20 or bnd != bnd:
                    bnd = None
                memo[k2] = (bnd, sol)
            bnd, sol = memo[k2]
            if bnd is None:
                ok = False
            else:
                total += bnd
            if sol is not None:
                v = np.where(self.integ[cols], np.round(sol), sol)
                sig = v.round(6).tobytes()
                if sig not in self._seen[b]:
                    self._seen[b].add(sig)
                    self.cands[b].append(v)
                    new += 1
        return (total if ok else None), new

    def master(self, deadline, gap=1e-4, relax=False):
        """Choose one candidate per block and the free columns (device counts). relax: the LP relaxation;
        returns its row duals (full row vector). Else the MIP: (objective, full solution vector) or None."""
        import highspy
        if any(not c for c in self.cands) or deadline - time.perf_counter() < 0.05:
            return None
        Rrows = np.nonzero(self.R)[0]
        nR = len(Rrows)
        ARf = self.AR[:, self.free].tocsc()
        cost, lo, hi, integ = list(self.c[self.free]), list(self.cl[self.free]), \
            list(self.cu[self.free]), list(self.integ[self.free])
        data, ind, ptr = [], [], [0]
        for j in range(len(self.free)):
            s, e = ARf.indptr[j], ARf.indptr[j + 1]
            data.extend(ARf.data[s:e]), ind.extend(ARf.indices[s:e]), ptr.append(len(data))
        nb = len(self.blocks)
        owner = []
        for b, (cols, _, _) in enumerate(self.blocks):
            sub = self.AR[:, cols]
            for v in self.cands[b]:
                col = sub @ v
                nz = np.nonzero(np.abs(col) > 1e-12)[0]
                data.extend(col[nz]), ind.extend(nz), 
                data.append(1.0), ind.append(nR + b), ptr.append(len(data))
                cost.append(float(self.c[cols] @ v)), lo.append(0.0), hi.append(1.0), integ.append(True)
                owner.append((b, v))
        m = highspy.HighsLp()
        ncol = len(cost)
        m.num_col_, m.num_row_ = ncol, nR + nb
        m.col_cost_ = np.array(cost)
        m.col_lower_, m.col_upper_ = np.array(lo), np.array(hi)
        m.row_lower_ = np.concatenate([self.rl[Rrows], np.ones(nb)])
        m.row_upper_ = np.concatenate([self.ru[Rrows], np.ones(nb)])
        m.offset_ = self.offset
        am = highspy.HighsSparseMatrix()
        am.format_ = highspy.MatrixFormat.kColwise
        am.num_col_, am.num_row_ = ncol, nR + nb
        am.start_ = np.array(ptr, dtype=np.int32)
        am.index_ = np.array(ind, dtype=np.int32)
        am.value_ = np.array(data, dtype=float)
        m.a_matrix_ = am
        if not relax:
            m.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                              for i in integ]
        s = highspy.Highs()
        s.setOptionValue("output_flag", False)
        s.setOptionValue("mip_rel_gap", gap)
        s.setOptionValue("time_limit", max(deadline - time.perf_counter(), 0.05))
        s.passModel(m)
        s.run()
        inf = s.getInfo()
        if relax:
            if s.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                return None
            y = np.zeros(self.nr)
            y[Rrows] = np.array(s.getSolution().row_dual)[:nR]
            return y
        if inf.primal_solution_status != 2:
            return None
        z = np.array(s.getSolution().col_value)
        full = np.zeros(self.nc)
        full[self.free] = z[:len(self.free)]
        for k, (b, v) in enumerate(owner):
            if z[len(self.free) + k] > 0.5:
                full[self.blocks[b][0]] = v
        return inf.objective_function_value, full


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


LAGRANGIAN = False          # see solve_problem
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
    t0 = time.perf_counter()         # the time limit covers preparing and building the model too
    prep = milp.prepare(pb, restrict, keep=start_from.choice if start_from is not None else None)
    if any(not opts for table in prep.options for opts in table.values()):
        return Outcome(SolveInfo("infeasible", None, 0.0, "presolve"), {}, None, prep, None)
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
    # Several workflows, LAGRANGIAN on: the Lagrangian bound (one small MIP per workflow, priced by the LP's
    # duals) and a master over the per-workflow placements it and the sub-MIP find. Off by default: on 2
    # loaded cores the pricing takes 9-15 s at 1000 operators, its candidates alone make poor plans, and
    # the primal phases need the time more (docs/placement.md, "Solver").
    coupling = list(model.n.values()) if large and len(pb.graphs) > 1 and LAGRANGIAN else None
    info = solve(model.prob, time_limit_s - (time.perf_counter() - t0), gap, threads, start_vars, groups,
                 coupling)
    info.seconds = time.perf_counter() - t0
    if info.status not in ("optimal", "feasible"):
        return Outcome(info, {}, None, prep, model)
    choice = milp.choice_of(model)
    return Outcome(info, choice, milp.evaluate(pb, prep, choice), prep, model)
