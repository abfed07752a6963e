"""Factorisation-free solvers on the distributed Hessian: memory O(N), for cells whose exact
factor does not fit (the 128 000-atom loop cell needs ~52 GB for MUMPS's fronts alone).

* :func:`preconditioned_lowest_modes` — the k lowest eigenpairs of D by SLEPc's generalised
  Davidson (GD) method, preconditioned by incomplete Cholesky (ICC(0) of each rank's diagonal
  block: PCBJACOBI, which on one rank is plain ICC), with the three translations of the periodic
  cell deflated. Memory: D (symmetric block storage) + an ICC(0) factor of the same pattern +
  a small search subspace — O(N). The price of not factorising: Sylvester's inertia cannot prove
  that no eigenvalue was skipped, so ``margin`` extra pairs are computed and only the lowest
  ``k`` returned (measured: without a margin, GD can return 3 of 4 copies of a degenerate
  eigenvalue of a cubic cell).
* :func:`preconditioned_newton_step` — dx with H dx = F by conjugate gradients with the same
  preconditioner, the translations projected out (Newton–Krylov relaxation of large cells,
  :mod:`hpcvib.landscape.krylov_minimum`).

The exact routes (shift-and-invert with MUMPS, :func:`hpcvib.linalg.spectral.lowest_modes`)
remain the default wherever their factor fits; :func:`lowest_modes_auto` chooses.
"""

from __future__ import annotations

import time

import numpy as np

from hpcvib.constants import PAPER_EIGENVALUE_TOL
from hpcvib.errors import ConvergenceError, HpcvibError
from hpcvib.linalg.petsc_env import log_event
from hpcvib.log import get_logger

#: extra eigenpairs computed beyond the k asked for (see the module docstring)
MODE_MARGIN = 6
#: SLEPc eigensolver (generalised Davidson; LOBPCG measured slower and failing in LAPACK's sygvd
#: on a 1 999-atom vacancy cell; -hpcvib_modes_eps_type overrides)
MODE_METHOD = "gd"
#: ways of obtaining the lowest modes (``lowest_modes_auto``)
MODE_ROUTES = ("auto", "shift-invert", "preconditioned")
N_TRANSLATIONS = 3
#: the shift-and-invert factor (kept for the solves, PETSc's MUMPS without METIS) against the
#: METIS analysis' estimate with factors discarded: measured 1.5 at 3 455 atoms and 1.24 at
#: 8 191; the kept/discarded ratio grows to 1.8 at 128 000 atoms (bench/memory_routes.py)
SHIFT_INVERT_MEMORY_FACTOR = 2.0
#: PETSc KSPConvergedReason codes of negative curvature met by CG
KSP_DIVERGED_INDEFINITE_PC, KSP_DIVERGED_INDEFINITE_MAT = -8, -10


def translation_vectors(masses: np.ndarray, mass_weighted: bool = True) -> np.ndarray:
    """The three orthonormal rigid translations of a periodic cell (3N × 3, original order): the
    exact null space of D (components ∝ √m_i) when ``mass_weighted``, else of H (uniform)."""
    weights = np.sqrt(masses) if mass_weighted else np.ones_like(masses)
    out = np.zeros((3 * len(masses), N_TRANSLATIONS))
    for alpha in range(N_TRANSLATIONS):
        out[alpha::3, alpha] = weights / np.linalg.norm(weights)
    return out


def _petsc_vectors(dh, mat, columns: np.ndarray) -> list:
    """PETSc vectors of ``mat``'s layout holding the columns (3N, original order)."""
    vecs = []
    for col in np.asarray(columns).T:
        v = mat.createVecRight()
        lo, hi = v.getOwnershipRange()
        v.setArray(dh.to_petsc_order(col)[lo:hi])
        vecs.append(v)
    return vecs


#: PETSc options of the preconditioner: ICC(0) on each rank's diagonal block (block Jacobi between
#: ranks; plain ICC on one rank), shifted to stay positive definite where the matrix is only
#: semi-definite (translations) or indefinite (saddles). Options the user gives win.
ICC_OPTIONS = {"pc_type": "bjacobi", "sub_pc_type": "icc", "sub_pc_factor_shift_type": "positive_definite"}


def preconditioned_lowest_modes(dh, k: int = 6, tol: float = PAPER_EIGENVALUE_TOL, want_vectors: bool = False,
                                margin: int = MODE_MARGIN, max_it: int = 20000, initial: np.ndarray | None = None):
    """The ``k`` lowest eigenpairs of D, ascending (three of them the translations, eigenvalue 0
    up to round-off) without factorising D: SLEPc's generalised Davidson preconditioned by ICC(0),
    translations deflated, ``k − 3 + margin`` pairs converged to the absolute residual ``tol``
    (eV/(Å² amu), the paper's 1e-6). Collective over ``dh.comm``. Returns
    :class:`hpcvib.linalg.spectral.Modes` (``shift`` = nan: no shift is used).

    Completeness is not proved (no inertia without a factorisation): ``margin`` extra pairs
    guard degenerate eigenvalues; the shift-and-invert route proves it where a factor fits."""
    from hpcvib.linalg.petsc_env import init_petsc, init_slepc
    from hpcvib.linalg.spectral import Modes, petsc_defaults, petsc_error_summary

    PETSc, SLEPc = init_petsc(), init_slepc()
    t0 = time.perf_counter()
    n = dh.n_dof
    k = min(k, n)
    wanted = max(0, k - N_TRANSLATIONS)
    translations = translation_vectors(dh.masses)
    D = dh.petsc_matrix(mass_weighted=True, symmetric=True)
    trans = _petsc_vectors(dh, D, translations)
    vals, vecs, res, its = [], [], [], 0
    try:
        if wanted > 0:
            nev = min(n - N_TRANSLATIONS, wanted + margin)
            eps = SLEPc.EPS().create(comm=D.comm)
            try:
                eps.setOptionsPrefix("hpcvib_modes_")
                eps.setOperators(D)
                eps.setProblemType(SLEPc.EPS.ProblemType.HEP)
                eps.setType(MODE_METHOD)
                eps.setWhichEigenpairs(SLEPc.EPS.Which.SMALLEST_REAL)
                eps.setDimensions(nev=nev)
                eps.setTolerances(tol, max_it)
                eps.setConvergenceTest(SLEPc.EPS.Conv.ABS)
                eps.setDeflationSpace(trans)
                if initial is not None:
                    start = _petsc_vectors(dh, D, np.asarray(initial).reshape(n, -1))
                    eps.setInitialSpace(start)
                    for v in start:
                        v.destroy()
                st = eps.getST()
                st.setType("precond")
                st.getKSP().setType("preonly")
                try:
                    with petsc_defaults("hpcvib_modes_st_", ICC_OPTIONS), log_event("hpcvibEigensolve"):
                        eps.setFromOptions()
                        eps.solve()
                except PETSc.Error as exc:
                    raise ConvergenceError(f"SLEPc {MODE_METHOD.upper()} failed: {petsc_error_summary(exc)}") from None
                nconv, its = eps.getConverged(), eps.getIterationNumber()
                if nconv < wanted:
                    raise ConvergenceError(f"SLEPc {MODE_METHOD.upper()} converged {nconv} of {wanted} lowest "
                                           f"non-translation eigenpairs of D (tol {tol:g}, {its} iterations)")
                vr = D.createVecRight()
                for i in range(nconv):
                    vals.append(eps.getEigenpair(i, vr).real)
                    res.append(eps.computeError(i, SLEPc.EPS.ErrorType.ABSOLUTE))
                    if want_vectors:
                        vecs.append(dh.to_original_order(np.concatenate(dh.comm.allgather(vr.getArray().copy()))))
                vr.destroy()
            finally:
                eps.destroy()
        zero = _rayleigh_quotients(D, trans)
    finally:
        for v in trans:
            v.destroy()
        D.destroy()
    order = np.argsort(vals)[:wanted]
    values = np.concatenate([zero, np.asarray(vals)[order]])
    ascending = np.argsort(values, kind="stable")[:k]  # a saddle's negative eigenvalue comes first
    values = values[ascending]
    residuals = np.concatenate([np.abs(zero), np.asarray(res)[order]])[ascending]
    vectors = None
    if want_vectors:
        found = np.stack([vecs[i] for i in order], axis=1) if wanted else np.zeros((n, 0))
        vectors = np.hstack([translations, found])[:, ascending]
    seconds = time.perf_counter() - t0
    get_logger("spectral").info("lowest %d eigenvalues of D (%s + ICC(0), translations deflated, %d its, %.2f s): %s",
                                k, MODE_METHOD.upper(), its, seconds, np.array2string(values, precision=6))
    return Modes(values, vectors, residuals, float("nan"), its, seconds)


def _rayleigh_quotients(D, vectors) -> np.ndarray:
    """xᵀ D x of unit vectors (the translations' eigenvalue: zero up to round-off)."""
    out = []
    w = D.createVecLeft()
    for v in vectors:
        D.mult(v, w)
        out.append(v.dot(w))
    w.destroy()
    return np.array(out)


def preconditioned_newton_step(dh, forces: np.ndarray, rtol: float = 1e-2, max_it: int = 5000,
                               trust_radius: float | None = None) -> tuple:
    """dx (Å, original order, 3N) with H dx = F by preconditioned conjugate gradients (ICC(0)
    per rank), the translations removed from F and dx (H is singular along them). Collective.
    Returns (dx, iterations); raises :class:`ConvergenceError` when CG meets negative curvature
    (H not positive definite: the configuration is not near a minimum) or does not converge."""
    from hpcvib.linalg.petsc_env import init_petsc
    from hpcvib.linalg.spectral import petsc_defaults, petsc_error_summary

    PETSc = init_petsc()
    H = dh.petsc_matrix(mass_weighted=False, symmetric=True)
    trans = _petsc_vectors(dh, H, translation_vectors(dh.masses, mass_weighted=False))
    null = PETSc.NullSpace().create(vectors=trans, comm=H.comm)
    ksp = PETSc.KSP().create(comm=H.comm)
    b = x = None
    try:
        H.setNullSpace(null)
        ksp.setOptionsPrefix("hpcvib_newton_")
        ksp.setOperators(H)
        ksp.setType("cg" if trust_radius is None else "stcg")
        ksp.setTolerances(rtol=rtol, max_it=max_it)
        # Steihaug's CG needs a positive-definite preconditioner where H is indefinite, which
        # ICC(0) of H is not: point Jacobi (H's diagonal, positive for any bound structure)
        options = dict(ICC_OPTIONS) if trust_radius is None else {"pc_type": "jacobi", "ksp_cg_radius": trust_radius}
        b, x = H.createVecs()
        lo, hi = b.getOwnershipRange()
        b.setArray(dh.to_petsc_order(np.asarray(forces).ravel())[lo:hi])
        null.remove(b)
        try:
            with petsc_defaults("hpcvib_newton_", options), log_event("hpcvibNewtonStep"):
                ksp.setFromOptions()
                ksp.solve(b, x)
        except PETSc.Error as exc:
            raise ConvergenceError(f"CG Newton step failed: {petsc_error_summary(exc)}") from None
        reason = ksp.getConvergedReason()
        if reason < 0:
            what = {KSP_DIVERGED_INDEFINITE_PC: "the preconditioner is not positive definite",
                    KSP_DIVERGED_INDEFINITE_MAT: "H is not positive definite"}.get(reason, f"KSP reason {reason}")
            raise ConvergenceError(f"CG Newton step did not converge ({what}, {ksp.getIterationNumber()} its)")
        null.remove(x)
        dx = dh.to_original_order(np.concatenate(dh.comm.allgather(x.getArray().copy())))
        return dx, ksp.getIterationNumber()
    finally:
        for obj in (b, x, ksp, null, *trans, H):
            if obj is not None:
                obj.destroy()


def shift_invert_estimate_mb(dh) -> float | None:
    """Memory (MB) the shift-and-invert route's factorisation of D would need: the symbolic
    analysis of sequential MUMPS with METIS (INFOG(17)) × :data:`SHIFT_INVERT_MEMORY_FACTOR`; None where it cannot be told before
    factorising (several ranks, or python-mumps missing)."""
    from hpcvib.linalg.solvers import mumps_seq

    if dh.comm.size > 1 or not mumps_seq.available():
        return None
    D = dh.gather_scipy(mass_weighted=True)
    with mumps_seq.SequentialMumps(D) as analysis:
        return SHIFT_INVERT_MEMORY_FACTOR * float(analysis.estimated_mb)


def choose_mode_route(dh, route: str = "auto") -> str:
    """``shift-invert`` (exact, completeness proved by inertia) when its factorisation fits in
    the memory budget, else ``preconditioned`` (O(N) memory); on several ranks ``auto`` keeps
    shift-and-invert (MUMPS distributes the factor), unless the cell has more atoms than one
    process's analysis could hold — choose ``preconditioned`` explicitly there."""
    from hpcvib.linalg.spectral import memory_budget_mb

    if route not in MODE_ROUTES:
        raise HpcvibError(f"unknown mode route {route!r} (choose from {', '.join(MODE_ROUTES)})")
    if route != "auto":
        return route
    need = shift_invert_estimate_mb(dh)
    budget = memory_budget_mb()
    if need is not None and need > budget:
        get_logger("spectral").info("shift-and-invert would factorise with about %.0f MB (> %.0f MB available): "
                                    "preconditioned Davidson instead", need, budget)
        return "preconditioned"
    return "shift-invert"


def lowest_modes_auto(dh, k: int = 6, route: str = "auto", want_vectors: bool = False,
                      tol: float = PAPER_EIGENVALUE_TOL):
    """The ``k`` lowest eigenpairs of D by the route :func:`choose_mode_route` picks; returns
    (route, :class:`hpcvib.linalg.spectral.Modes`)."""
    from hpcvib.linalg.spectral import lowest_modes

    chosen = choose_mode_route(dh, route)
    if chosen == "preconditioned":
        return chosen, preconditioned_lowest_modes(dh, k, tol=tol, want_vectors=want_vectors)
    return chosen, lowest_modes(dh, k, tol=tol, want_vectors=want_vectors)
