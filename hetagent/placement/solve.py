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
    for large models, an LP-guided strategy (`groups`: per operator {device: [its option variables]};
    `counts`: {device: its count variable n[d]}):

      1. the LP relaxation (serial dual simplex, so the same duals every run): a valid lower bound, and
         the device kinds a good plan needs;
      2. a sub-MIP on the device kinds the LP relaxation uses (more than `KEEP_UNITS` devices, plus those
         of the start); an operator with no option there keeps all of its options. A third of the full
         model at 1000 operators, where HiGHS's own heuristics find good plans fast. HiGHS searches on
         about one core, so with several workflows (`decompose`) the other core meanwhile
         a. prices the Lagrangian bound (one small MIP per workflow, costs from the LP's duals), tighter
            than the LP's since each workflow's choice stays integer,
         b. finds a first plan in a narrow sub-MIP (`_first_plan`), then
         c. runs a second search of the sub-MIP from it, with another random seed;
         every plan either search finds is split into its workflows' placements, which a small master
         MIP recombines (`_Decomposition.master`; at 1000 operators that usually beats both searches),
         and the best plan so far is handed to both running searches. They stop once the best plan is
         within the gap of the best bound. One workflow: the first plan, then one search;
      3. the full MIP, started from the best plan so far, for the time left (skipped when within the gap).

    The reported gap is (best plan - best proven bound) / best plan, the bound being the largest of the
    LP relaxation's, the Lagrangian's and HiGHS's own dual bound of the full model: never a bound of a
    restricted model."""

    KEEP_UNITS = 0.1         # the sub-MIP keeps a device kind whose LP count exceeds this
    LP_SHARE = 0.35          # most of the time limit the LP relaxation may take
    FIRST_SHARE = 0.15       # most of the time limit the first, narrow sub-MIP may take
    LAG_SHARE = 0.75         # the Lagrangian bound must be done by this share of the limit
    SUB_SHARE = 0.9          # most of the remaining time the searches may take (HiGHS may overrun a little)

    def __init__(self, start=None, groups=None, counts=None, decompose=False, **kw):
        super().__init__(**kw)
        self.start = start
        self.groups = groups
        self.counts = counts or {}
        self.decompose = decompose
        self.phases = {}

    def actualSolve(self, lp, callback=None):
        if not self.start and not self.groups:
            return super().actualSolve(lp)
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
            lb, best = self._lp_guided(h, t0, limit, start)
            gap_now = _rel_gap(best[0] if best else None, lb)
            if gap_now is not None and gap_now <= (self.gapRel or 0) + 1e-12:
                self._load(h, best[1], lp)
                self.phases["full"] = "skipped: the sub-MIP plan is within the gap of the bound"
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
            self._load(h, best[1], lp)      # the full MIP found nothing better in time: keep the plan
            lp._het_gap = _rel_gap(best[0], bound)
            return lp.status
        lp.assignStatus(status, sol_status)
        lp._het_gap = _rel_gap(obj, bound) if sol_status != pulp.LpSolutionOptimal else None
        return status

    def _lp_guided(self, h, t0, limit, start):
        import threading
        import highspy
        lp0 = h.getLp()
        lower, upper = np.array(lp0.col_lower_), np.array(lp0.col_upper_)
        h.setOptionValue("solve_relaxation", True)
        h.setOptionValue("time_limit", max(limit * self.LP_SHARE, 0.2))
        h.setOptionValue("parallel", "off")   # serial dual simplex: the same duals (Lagrangian) every run
        h.run()
        h.setOptionValue("parallel", "choose")
        self.phases["lp_s"] = time.perf_counter() - t0
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            h.setOptionValue("solve_relaxation", False)
            return None, None
        x = np.array(h.getSolution().col_value)
        y = np.array(h.getSolution().row_dual)
        self.phases["lp_bound"] = h.getInfo().objective_function_value
        # shared by the threads: the best bound (the searches stop within the gap of it) and plan
        state = {"bound": self.phases["lp_bound"], "best": None, "lock": threading.Lock(),
                 "new": threading.Event(), "done": threading.Event()}
        dec = None
        if self.decompose and self.counts:
            dec = _Decomposition(h, np.array([v.index for v in self.counts.values()]))
            dec = dec if len(dec.blocks) > 1 else None
            state["dec"] = dec

        keep = {d for d, v in self.counts.items() if x[v.index] > self.KEEP_UNITS}
        if start is not None:
            keep |= {d for d, v in self.counts.items() if start[v.index] > 0.5}
        off = []
        for by_dev in self.groups.values():
            if any(d in keep for d in by_dev):
                off.extend(v.index for d, vs in by_dev.items() if d not in keep for v in vs)
        self.phases["sub_devices"] = sorted(keep)
        off = np.array(sorted(off), dtype=np.int32)
        # a second HiGHS instance for the first plan (below) and, with several workflows, a second search
        twin = highspy.Highs()
        twin.setOptionValue("output_flag", False)
        twin.passModel(h.getModel())
        twin.setOptionValue("random_seed", 1)
        h.setOptionValue("solve_relaxation", False)
        _exclude(h, off)
        if start is not None and not start[off].any():
            h.setSolution(highspy_solution(h, start))

        def first_then_second_search(end):
            self._first_plan(twin, x, state, start, time.perf_counter() + limit * self.FIRST_SHARE,
                             lower, upper)
            first = state["best"][1] if state["best"] is not None else None
            _exclude(twin, off)
            if first is not None and dec is not None:
                dec.add(first)
                state["new"].set()
            if first is not None and not first[off].any():
                twin.setSolution(highspy_solution(twin, first))
            self._search(twin, state, end, "sub2")

        if dec is None:        # one workflow: the first plan, then one search
            self._first_plan(twin, x, state, start, time.perf_counter() + limit * self.FIRST_SHARE,
                             lower, upper)
            left = limit - (time.perf_counter() - t0)
            self._search(h, state, time.perf_counter() + left * self.SUB_SHARE, "sub")
        else:
            # HiGHS searches a MIP on about one core. The other prices the Lagrangian bound, finds a
            # first plan in a narrow sub-MIP (the wide one may find none in its time at 2000
            # operators), then searches the sub-MIP from that plan with another seed. Every plan either
            # search finds is split into its workflows' placements, which the master recombines (at
            # 1000 operators usually into a better plan than either search's).
            left = limit - (time.perf_counter() - t0)
            end = time.perf_counter() + left * self.SUB_SHARE

            def second():
                t1 = time.perf_counter()
                b = dec.price(y, t0 + limit * self.LAG_SHARE, 1e-4)
                self.phases["lagrangian_s"] = time.perf_counter() - t1
                self.phases["lagrangian_bound"] = b
                with state["lock"]:
                    state["bound"] = max(state["bound"], b or -math.inf)
                state["new"].set()
                first_then_second_search(end)

            second_search = threading.Thread(target=second, name="hetagent-second-search", daemon=True)
            recombiner = threading.Thread(target=self._recombine, args=(state, end), daemon=True,
                                          name="hetagent-recombine")
            second_search.start()
            recombiner.start()
            self._search(h, state, end, "sub")
            best = state["best"]
            if best is not None and best[0] <= state["bound"] / (1 - (self.gapRel or 1e-4)) + 1e-9:
                state["done"].set()         # within the gap: the second search stops at its next poll
            second_search.join(max(end - time.perf_counter(), 0.0) + 2.0)
            state["done"].set()
            state["new"].set()
            recombiner.join(5.0)
            self._recombine_once(state, max(t0 + limit - 0.5, time.perf_counter() + 0.1))
        if len(off):
            h.changeColsBounds(len(off), off, lower[off], upper[off])
        return state["bound"], state["best"]

    def _first_plan(self, h, x, state, start, deadline, lower, upper):
        """A quick first plan from a narrow sub-MIP: an operator the LP places on one option keeps only
        it, every other operator keeps the devices its LP solution uses. Poor (42-43 $/h at 1000
        operators against 40 for the final plan) but found in a second or two even at 2000 operators,
        where the wide sub-MIP may find none in its time; the second search starts from it.
        lower, upper: the model's column bounds, restored afterwards."""
        h.setOptionValue("solve_relaxation", False)
        off = []
        for by_dev in self.groups.values():
            opts = [v.index for vs in by_dev.values() for v in vs]
            mine = {j for j in opts if start is not None and start[j] > 0.5}
            one = [j for j in opts if x[j] >= 1 - 1e-6]
            if one:
                off.extend(j for j in opts if j not in set(one) | mine)
                continue
            for vs in by_dev.values():
                idx = [v.index for v in vs]
                if x[idx].sum() <= 1e-6 and not mine & set(idx):
                    off.extend(idx)
        off = np.array(sorted(off), dtype=np.int32)
        _exclude(h, off)
        if start is not None:
            h.setSolution(highspy_solution(h, start))
        h.setOptionValue("time_limit", max(deadline - time.perf_counter(), 0.2))
        h.setOptionValue("mip_rel_gap", self.gapRel or 1e-4)
        t1 = time.perf_counter()
        h.run()
        self.phases["first_s"] = time.perf_counter() - t1
        info = h.getInfo()
        if info.primal_solution_status == 2:
            self.phases["first_objective"] = info.objective_function_value
            self._offer(state, info.objective_function_value, np.array(h.getSolution().col_value), "first")
        h.changeColsBounds(len(off), off, lower[off], upper[off])

    def _offer(self, state, value, values, name):
        """A plan found by `name`: keep it if it is the best so far."""
        with state["lock"]:
            if state["best"] is None or value < state["best"][0] - 1e-9:
                state["best"] = (value, values)
                self.phases["best_from"] = name

    def _recombine(self, state, end):
        """Until the searches end: whenever they found new plans, recombine all plans' workflows."""
        while not state["done"].is_set() and time.perf_counter() < end:
            state["new"].wait(max(end - time.perf_counter(), 0.0))
            state["new"].clear()
            if not state["done"].is_set():
                self._recombine_once(state, min(end, time.perf_counter() + 5.0))

    def _recombine_once(self, state, deadline):
        r = state["dec"].master(deadline, 1e-6)
        if r is not None:
            self.phases["recombined"] = self.phases.get("recombined", 0) + 1
            self._offer(state, r[0], r[1], "recombination")

    def _search(self, h, state, end, name):
        """Runs the MIP in `h` until `end`, or until the best plan is within the gap of the best bound,
        or (with no plan at half its time) gives up. Offers every plan it finds."""
        gap = self.gapRel or 1e-4
        t1 = time.perf_counter()
        if end - t1 < 0.5:
            return
        give_up = t1 + (end - t1) / 2
        dec = state.get("dec")

        def check(e):
            best = state["best"]
            plan = min(e.data_out.mip_primal_bound, best[0] if best else math.inf)
            if plan <= state["bound"] / (1 - gap) + 1e-9 or (plan >= 1e20 and time.perf_counter() > give_up) \
                    or state["done"].is_set():
                e.interrupt()

        def found(e):
            values = np.array(e.data_out.mip_solution)
            self._offer(state, e.data_out.objective_function_value, values, name)
            if dec is not None:
                dec.add(values)
                state["new"].set()

        given = [math.inf]

        def share(e):       # a better plan found elsewhere (the other search, recombination) joins in
            best = state["best"]
            if best is not None and best[0] < min(e.data_out.mip_primal_bound, given[0]) - 1e-9:
                given[0] = best[0]
                e.data_in.setSolution(best[1])
                self.phases["shared"] = self.phases.get("shared", 0) + 1

        h.setOptionValue("time_limit", end - t1)
        h.setOptionValue("mip_rel_gap", gap)
        callbacks = ((h.cbMipInterrupt, check), (h.cbMipImprovingSolution, found),
                     (h.cbMipUserSolution, share))
        for event, fn in callbacks:
            event.subscribe(fn)
        try:
            h.run()
        finally:
            for event, fn in callbacks:
                event.unsubscribe(fn)
        self.phases[f"{name}_s"] = time.perf_counter() - t1
        info = h.getInfo()
        if info.primal_solution_status == 2:          # kSolutionStatusFeasible
            self.phases[f"{name}_objective"] = info.objective_function_value
            self._offer(state, info.objective_function_value, np.array(h.getSolution().col_value), name)

    def _load(self, h, values, lp):
        """Put `values` (a full column vector) into the PuLP variables as the solution."""
        for var in lp.variables():
            var.varValue = float(values[var.index])
        lp.assignStatus(pulp.LpStatusOptimal, pulp.LpSolutionIntegerFeasible)


class _Decomposition:
    """The placement model split at its coupling rows (every row holding a device count n[d]: pooled
    throughput, memory, per-operator rows). Without them the model falls apart into independent blocks,
    one per workflow (its options, start times, transfers, SLA).

    price(y): Lagrangian relaxation with multipliers y on the coupling rows. Each block is a small MIP
    with costs c - A^T y; the sum of their dual bounds plus y.rhs is a lower bound of the FULL model
    (weak duality; valid for any sign-feasible y). Identical blocks (identical workflows: same
    operators, rates and SLA give identical rows and costs) are priced once. Each block's solution is
    kept as a candidate placement of that workflow.
    add(plan): keeps each workflow's part of a plan as a candidate.
    master(): one binary per candidate (one candidate per block), the device counts and the coupling
    rows with each candidate's exact contribution. Any master solution is a feasible plan of the full
    model (each candidate satisfies its own block's rows; the coupling rows are linear), priced exactly.
    Over the workflows' placements in several plans it recombines them: the best of them, or better."""

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
        self.blocks = []       # (cols, HighsLp of the block's rows, structural key)
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
        self._solver = {}
        self.cands = [[] for _ in self.blocks]     # per block: candidate placements (value vectors)
        self._seen = [set() for _ in self.blocks]

    def add(self, values):
        """Keep each block's part of a full solution vector as a candidate placement of that block."""
        for b, (cols, _, _) in enumerate(self.blocks):
            self._keep(b, np.asarray(values)[cols])

    def _keep(self, b, v):
        cols = self.blocks[b][0]
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
        """Lagrangian bound for row multipliers y (a full row vector; only coupling rows are used), or
        None when time ran out or a multiplier makes it unbounded."""
        import highspy
        yR, rhs = self._multipliers(np.asarray(y, float))
        cmod = self.c - self.AT @ yR
        total = float(yR @ rhs) + self.offset
        xf = np.where(cmod[self.free] >= -1e-7, self.cl[self.free], self.cu[self.free])
        if np.any(np.abs(xf) >= 1e20):
            return None
        total += float(cmod[self.free] @ xf)
        memo = {}
        for b, (cols, m, key) in enumerate(self.blocks):
            k2 = (key, cmod[cols].round(12).tobytes())
            if k2 not in memo:
                if deadline - time.perf_counter() < 0.05:
                    return None
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
                memo[k2] = None if bnd is None or abs(bnd) > 1e20 or bnd != bnd else (bnd, sol)
            if memo[k2] is None:
                return None
            total += memo[k2][0]
            if memo[k2][1] is not None:
                self._keep(b, memo[k2][1])
        return total

    def master(self, deadline, gap=1e-4):
        """Choose one candidate per block and the free columns (device counts): (objective, full
        solution vector), or None when some block has no candidate yet or time ran out."""
        import highspy
        cands = [list(c) for c in self.cands]      # a snapshot: searches may add candidates meanwhile
        if any(not c for c in cands) or deadline - time.perf_counter() < 0.05:
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
            for v in cands[b]:
                col = sub @ v
                nz = np.nonzero(np.abs(col) > 1e-12)[0]
                data.extend(col[nz]), ind.extend(nz)
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
        m.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                          for i in integ]
        s = highspy.Highs()
        s.setOptionValue("output_flag", False)
        s.setOptionValue("mip_rel_gap", gap)
        s.setOptionValue("time_limit", max(deadline - time.perf_counter(), 0.05))
        s.passModel(m)
        s.run()
        inf = s.getInfo()
        if inf.primal_solution_status != 2:
            return None
        z = np.array(s.getSolution().col_value)
        full = np.zeros(self.nc)
        full[self.free] = z[:len(self.free)]
        for k, (b, v) in enumerate(owner):
            if z[len(self.free) + k] > 0.5:
                full[self.blocks[b][0]] = v
        return inf.objective_function_value, full


def _exclude(h, cols):
    """Fix the given columns of a Highs model to 0 (options a restricted model leaves out)."""
    if len(cols):
        h.changeColsBounds(len(cols), cols, np.zeros(len(cols)), np.zeros(len(cols)))


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


def _solvers(time_limit_s, gap, threads, start=None, groups=None, counts=None, decompose=False):
    """(name, factory) in order of preference; a solver is only built when tried."""
    yield "highs", lambda: _HiGHS(start, groups, counts, decompose, msg=False, timeLimit=time_limit_s,
                                  gapRel=gap, threads=threads)
    yield "cbc", lambda: pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, gapRel=gap, threads=threads)


def solve(prob: pulp.LpProblem, time_limit_s: float = 30, gap: float = 1e-4,
          threads: int | None = None, start: dict | None = None, groups: list | None = None,
          counts: dict | None = None, decompose: bool = False) -> SolveInfo:
    """Solve `prob` in place; HiGHS first, CBC if HiGHS is missing or fails. `start`: a MIP start.
    `groups`: per operator {device: [option variables]}: use the LP-guided strategy (large models);
    `counts`: {device: count variable}: the devices the sub-MIP may keep and, with `decompose` (several
    workflows), the variables that link them: Lagrangian bound and recombination of plans."""
    last_err = None
    prob._het_gap = None
    for name, factory in _solvers(max(time_limit_s, 0.5), gap, threads, start, groups, counts, decompose):
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
    model = milp.build(pb, prep, use_caps=use_caps, facility_cuts=not large)
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
        groups = by
    info = solve(model.prob, time_limit_s - (time.perf_counter() - t0), gap, threads, start_vars, groups,
                 model.n if large else None, decompose=large and len(pb.graphs) > 1)
    info.seconds = time.perf_counter() - t0
    if info.status not in ("optimal", "feasible"):
        return Outcome(info, {}, None, prep, model)
    choice = milp.choice_of(model)
    return Outcome(info, choice, milp.evaluate(pb, prep, choice), prep, model)
