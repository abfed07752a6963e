"""Spectral solvers on the distributed dynamical matrix (PETSc/SLEPc/MUMPS), THEORY §3.

* :func:`mumps_logdet` — one sparse LDLᵀ (or Cholesky) factorisation with MUMPS gives
  ln|det A| (ICNTL(33): RINFOG(12)·2^INFOG(34)), its sign, the number of negative pivots
  (INFOG(12): the inertia, by Sylvester's law) and the null pivots (INFOG(28)).
* :func:`log_pseudo_determinant` — ln det'(D) of a periodic cell, exact, without eigenvalues:
  ln det'(D) = ln|det D_(-k)| + 3 ln(M_tot/m_k), D_(-k) = D without the rows of atom k.
  On one process a positive-definite D_(-k) is factored by CHOLMOD (supernodal Cholesky,
  nested dissection; :mod:`hpcvib.linalg.solvers.cholmod`) when its factor fits in memory; otherwise — and
  always for saddles — by sequential MUMPS with METIS and discarded factors
  (:mod:`hpcvib.linalg.solvers.mumps_seq`), and on several ranks by PETSc's MUMPS. Each route states its
  memory need after the symbolic analysis: a matrix that does not fit is refused before any
  numerical work (:func:`memory_budget_mb`).
* :func:`lowest_modes` — the k lowest eigenpairs of D by SLEPc Krylov–Schur with
  shift-and-invert (MUMPS), the shift placed below the spectrum and checked by inertia.
* :func:`mumps_solve` — one solve with a symmetric indefinite matrix (Newton steps).
* :func:`dense_eigenvalues` — LAPACK reference for small cells.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field

import numpy as np

import os

from hpcvib.constants import PAPER_EIGENVALUE_TOL
from hpcvib.errors import ConvergenceError, HpcvibError
from hpcvib.linalg.petsc_env import log_event
from hpcvib.linalg.solvers import cholmod, mumps_seq
from hpcvib.log import get_logger

#: MUMPS ICNTL(7) codes of the fill-reducing orderings (Debian's MUMPS has no METIS/SCOTCH).
ORDERINGS = {"amd": 0, "amf": 2, "scotch": 3, "pord": 4, "metis": 5, "qamd": 6, "auto": 7}
#: Default ordering, measured fastest on 3D bcc/diamond lattices with Debian's MUMPS (bench/).
DEFAULT_ORDERING = "auto"
#: Sparse direct solvers for ln det': ``auto`` = CHOLMOD on one process when available, with
#: MUMPS LDLᵀ when D_(-k) is not positive definite; MUMPS on several processes.
SOLVERS = ("auto", "mumps", "cholmod", "mumps-metis")
#: environment variable that caps the memory (MB) a factorisation may plan to use
MEMORY_LIMIT_VARIABLE = "HPCVIB_MEMORY_LIMIT_MB"
#: share of the memory the kernel reports available that a factorisation may plan to use
MEMORY_SHARE = 0.9


def memory_budget_mb() -> float:
    """Memory (MB) one factorisation may use: ``$HPCVIB_MEMORY_LIMIT_MB`` (``--memory-limit``)
    if set, else 90 % of MemAvailable of /proc/meminfo (unlimited where that is unknown)."""
    value = os.environ.get(MEMORY_LIMIT_VARIABLE)
    if value:
        try:
            return float(value)
        except ValueError:
            raise HpcvibError(f"{MEMORY_LIMIT_VARIABLE}={value!r} is not a number of MB") from None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return MEMORY_SHARE * int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("inf")


def _too_large(route: str, need_mb: float, budget_mb: float, n: int) -> HpcvibError:
    return HpcvibError(f"the exact factorisation of this {n}-unknown matrix needs about {need_mb:.0f} MB "
                       f"({route}), more than the {budget_mb:.0f} MB available: run on a node with more "
                       f"memory or over more ranks (--solver mumps), raise --memory-limit if the "
                       f"estimate is too cautious, or predict with a surrogate model (hpcvib predict)")


@dataclass
class Factorisation:
    """What one MUMPS factorisation of a symmetric matrix tells."""

    ln_abs_det: float
    sign: float
    n_negative: int
    n_null: int
    seconds: float
    memory_mb_max: int
    memory_mb_total: int
    ordering: str
    n: int
    info: dict = field(default_factory=dict)
    solver: str = "mumps"


def petsc_error_summary(exc) -> str:
    """A PETSc error's message on one line: its own words without the traceback of C functions
    (``Input string banana has no integer value``, not ten lines of ``[0] PCSetUp() at ...``)."""
    import re

    words = [re.sub(r"^\[\d+\]\s*", "", line).strip() for line in str(exc).splitlines()]
    words = [w for w in words if w and not re.search(r"\(\) at \S+:\d+$", w) and not w.startswith("error code")]
    return "; ".join(words) or str(exc).splitlines()[0]


@contextlib.contextmanager
def petsc_defaults(prefix: str, defaults: dict):
    """``defaults`` in the PETSc options database under ``prefix`` for the duration of one solve,
    unless the user already gave them (command line or ``--petsc-options``: user options always
    win); the options this call inserted are removed afterwards, so the database holds nothing
    of hpcvib's between solves."""
    from hpcvib.linalg.petsc_env import init_petsc

    opts = init_petsc().Options(prefix)
    inserted = [key for key in defaults if not opts.hasName(key)]
    for key in inserted:
        opts[key] = defaults[key]
    try:
        yield
    finally:
        for key in inserted:
            opts.delValue(key)


def _mumps_defaults(ordering: str) -> dict:
    if ordering not in ORDERINGS:
        raise HpcvibError(f"unknown MUMPS ordering {ordering!r} (choose from {', '.join(ORDERINGS)})")
    return {
        "ksp_type": "preonly",
        "pc_type": "cholesky",
        "pc_factor_mat_solver_type": "mumps",
        "mat_mumps_icntl_7": ORDERINGS[ordering],
        "mat_mumps_icntl_8": 0,    # no scaling: D is mass-weighted and well scaled (measured 10 % faster)
        "mat_mumps_icntl_12": 1,   # usual symmetric ordering (no compressed 2×2-pivot graph)
        "mat_mumps_icntl_13": 1,   # root front without ScaLAPACK: determinant and inertia cover it
        "mat_mumps_icntl_14": 40,  # 40 % working-space relaxation
        "mat_mumps_icntl_15": -3,  # analysis on the graph of 3×3 blocks (atoms), not of scalars
    }


def mumps_logdet(mat, ordering: str = DEFAULT_ORDERING, keep_factors: bool = False) -> Factorisation:
    """Factor the symmetric PETSc matrix ``mat`` with MUMPS (LDLᵀ, SYM=2) and return its
    log-determinant, sign and inertia. Collective over ``mat.comm``.

    Options given on the command line with prefix ``-hpcvib_det_`` (e.g.
    ``-hpcvib_det_mat_mumps_icntl_7 4``) override the defaults.
    """
    from hpcvib.linalg.petsc_env import init_petsc

    PETSc = init_petsc()
    ksp = PETSc.KSP().create(comm=mat.comm)
    F = pc = None
    try:
        prefix = "hpcvib_det_keep_" if keep_factors else "hpcvib_det_"
        defaults = _mumps_defaults(ordering)
        defaults.update({
            "mat_mumps_icntl_24": 1,  # detect null pivots: a singular matrix is an error, not a number
            "mat_mumps_icntl_33": 1,  # compute the determinant
            "mat_mumps_icntl_31": 0 if keep_factors else 1,  # discard factors when only det is wanted
        })
        with petsc_defaults(prefix, defaults):
            ksp.setOptionsPrefix(prefix)
            ksp.setOperators(mat)
            ksp.setFromOptions()
            pc = ksp.getPC()
            pc.setFactorSetUpSolverType()
            F = pc.getFactorMatrix()
            t0 = time.perf_counter()
            try:
                with log_event("hpcvibFactorisation"):
                    pc.setUp()
            except PETSc.Error as exc:
                raise HpcvibError(f"MUMPS factorisation failed: INFOG(1)={F.getMumpsInfog(1)}, "
                                  f"INFOG(2)={F.getMumpsInfog(2)} ({petsc_error_summary(exc)})") from None
        seconds = time.perf_counter() - t0
        mantissa = F.getMumpsRinfog(12)
        exponent = F.getMumpsInfog(34)
        ordering_used = {v: k for k, v in ORDERINGS.items()}.get(F.getMumpsInfog(7), str(F.getMumpsInfog(7)))
        result = Factorisation(
            ln_abs_det=float(np.log(abs(mantissa)) + exponent * np.log(2.0)) if mantissa != 0 else -np.inf,
            sign=float(np.sign(mantissa)),
            n_negative=int(F.getMumpsInfog(12)),
            n_null=int(F.getMumpsInfog(28)),
            seconds=seconds,
            memory_mb_max=int(F.getMumpsInfog(21)),
            memory_mb_total=int(F.getMumpsInfog(22)),
            ordering=ordering_used,
            n=mat.getSize()[0],
            info={"flops_elimination": float(F.getMumpsRinfog(3)), "factor_entries": int(F.getMumpsInfog(29))},
        )
    finally:
        # F is a second reference to the factor: destroy it now, collectively, or Python's GC
        # hands it to PETSc's delayed-destroy list and the factor's memory stays allocated
        for ref in (F, pc):
            if ref is not None:
                ref.destroy()
        ksp.destroy()
    return result


def mumps_solve(mat, rhs_local: np.ndarray) -> np.ndarray:
    """x with A x = b for the symmetric (possibly indefinite) PETSc matrix ``mat`` by one MUMPS
    LDLᵀ factorisation; ``rhs_local`` and the result are this rank's rows of b and x. Collective
    over ``mat.comm``. Options with prefix ``-hpcvib_solve_`` override the defaults."""
    from hpcvib.linalg.petsc_env import init_petsc

    PETSc = init_petsc()
    ksp = PETSc.KSP().create(comm=mat.comm)
    b = x = None
    try:
        with petsc_defaults("hpcvib_solve_", _mumps_defaults(DEFAULT_ORDERING)):
            ksp.setOptionsPrefix("hpcvib_solve_")
            ksp.setOperators(mat)
            ksp.setFromOptions()
            ksp.getPC().setFactorSetUpSolverType()
            b, x = mat.createVecs()
            b.setArray(np.asarray(rhs_local, dtype=float))
            try:
                ksp.solve(b, x)
            except PETSc.Error as exc:
                raise HpcvibError(f"MUMPS solve failed (singular matrix?): {petsc_error_summary(exc)}") from None
        if ksp.getConvergedReason() < 0:
            raise HpcvibError(f"MUMPS solve failed: KSP reason {ksp.getConvergedReason()}")
        return x.getArray().copy()
    finally:
        for v in (b, x):
            if v is not None:
                v.destroy()
        ksp.destroy()


def stationary_point_kind(n_negative: int) -> str:
    """The kind of a stationary point from its inertia (number of negative eigenvalues of D)."""
    return {0: "minimum", 1: "saddle"}.get(int(n_negative), "higher-order saddle")


@dataclass
class PseudoDeterminant:
    """ln det'(D) (D in eV/(Å² amu)) of a periodic cell and the inertia of D."""

    ln_det_prime: float
    n_negative: int
    pinned_atom: int
    factorisation: Factorisation

    @property
    def kind(self) -> str:
        return stationary_point_kind(self.n_negative)


def choose_pinned_atom(masses: np.ndarray) -> int:
    """Atom whose rows are removed: the heaviest (lowest index among equals).

    Any atom gives the same ln det' exactly; the heaviest keeps Z_k = sqrt(m_k/M) I largest."""
    return int(np.flatnonzero(masses == masses.max())[0])


def _pinned_matrix(dh, k: int):
    """D_(-k) as a scipy matrix on this process (one-rank routes)."""
    D = dh.gather_scipy(mass_weighted=True)
    keep = np.ones(D.shape[0], dtype=bool)
    keep[3 * k:3 * k + 3] = False
    return D[keep][:, keep]


def _cholmod_logdet(D, ordering: str, budget_mb: float, forced: bool = False) -> Factorisation | None:
    """ln|det D_(-k)| of the scipy matrix ``D`` = D_(-k) by CHOLMOD on one process; None when it
    is not positive definite or (unless ``forced``, then an error) its factor would not fit in
    ``budget_mb``."""
    t0 = time.perf_counter()
    res = cholmod.cholesky_logdet(D, ordering=cholmod.DEFAULT_ORDERING if ordering == "auto" else ordering,
                                  memory_limit_mb=budget_mb)
    if not res.factored:
        if forced:
            raise _too_large("CHOLMOD in core", res.estimated_mb, budget_mb, res.n)
        get_logger("spectral").info("CHOLMOD factor would need about %d MB (> %.0f MB available): MUMPS with "
                                    "discarded factors instead", res.estimated_mb, budget_mb)
        return None
    if not res.positive_definite:
        get_logger("spectral").info("D_(-k) is not positive definite (CHOLMOD stopped at column %d of "
                                    "%d): MUMPS LDLᵀ counts the negative eigenvalues", res.minor, res.n)
        return None
    return Factorisation(res.ln_det, 1.0, 0, 0, time.perf_counter() - t0, res.peak_mb, res.peak_mb,
                         res.ordering, res.n, {"flops_elimination": res.gflop * 1e9,
                                               "factor_entries": res.factor_entries,
                                               "analyse_s": res.analyse_seconds,
                                               "factor_s": res.factor_seconds,
                                               "estimated_mb": res.estimated_mb}, "cholmod")


def _mumps_seq_logdet(D, budget_mb: float) -> Factorisation:
    """ln|det D_(-k)| and its inertia by sequential MUMPS (METIS, factors discarded) on one
    process; an error before any numerical work when the analysis' estimate exceeds ``budget_mb``."""
    t0 = time.perf_counter()
    with mumps_seq.SequentialMumps(D) as m:
        if m.estimated_mb > budget_mb:
            raise _too_large("MUMPS, METIS ordering, factors discarded", m.estimated_mb, budget_mb, m.n)
        with log_event("hpcvibFactorisation"):
            r = m.factor()
        return Factorisation(r["ln_abs_det"], r["sign"], r["n_negative"], r["n_null"], time.perf_counter() - t0,
                             r["memory_mb"], r["memory_mb"], r["ordering"], m.n,
                             {"flops_elimination": m.estimated_flops, "estimated_mb": m.estimated_mb,
                              "analyse_s": m.analyse_seconds, "factor_s": r["seconds"]}, "mumps-metis")


def choose_solver(comm, solver: str = "auto") -> str:
    """The sparse solver :func:`log_pseudo_determinant` will use on ``comm``."""
    if solver not in SOLVERS:
        raise HpcvibError(f"unknown solver {solver!r} (choose from {', '.join(SOLVERS)})")
    if solver in ("cholmod", "mumps-metis"):
        if comm.size > 1:
            raise HpcvibError(f"the {solver} solver runs on one process; use --solver mumps (or auto) "
                              f"on {comm.size} ranks")
        backend = cholmod if solver == "cholmod" else mumps_seq
        if not backend.available():
            raise HpcvibError(f"{solver} solver unavailable: {backend.unavailable_reason()}")
        return solver
    if solver == "auto" and comm.size == 1:
        if cholmod.available():
            return "cholmod"
        _log_once(f"CHOLMOD not used ({cholmod.unavailable_reason()}): MUMPS factors on one process")
    return "mumps"


@functools.lru_cache(maxsize=None)
def _log_once(message: str) -> None:
    get_logger("spectral").info("%s", message)


def log_pseudo_determinant(dh, pinned_atom: int | None = None, ordering: str = DEFAULT_ORDERING,
                           solver: str = "auto") -> PseudoDeterminant:
    """Exact ln det'(D) of the distributed Hessian ``dh`` by one sparse factorisation (THEORY §3).

    ln det'(D) = ln|det D_(-k)| + 3 ln(M_tot / m_k); the number of negative eigenvalues of D is
    the number of negative pivots of D_(-k). A null pivot means D has more than the three zero
    modes of a periodic cell (a mechanically unstable or disconnected structure): an error.
    ``solver`` (:data:`SOLVERS`): CHOLMOD Cholesky proves positive definiteness (inertia 0)
    when it succeeds; otherwise MUMPS LDLᵀ gives the determinant and the inertia.
    """
    log = get_logger("spectral")
    masses = dh.masses
    k = choose_pinned_atom(masses) if pinned_atom is None else int(pinned_atom)
    if not 0 <= k < len(masses):
        raise HpcvibError(f"pinned atom {k} out of range (0..{len(masses) - 1})")
    fac = None
    if solver == "auto" and ordering != "auto" and ordering not in cholmod.ORDERINGS:
        solver = "mumps"  # a MUMPS-only ordering was asked for
    chosen = choose_solver(dh.comm, solver)
    budget = memory_budget_mb()
    one_process_mumps = chosen == "mumps-metis" or (solver == "auto" and dh.comm.size == 1 and mumps_seq.available())
    D = _pinned_matrix(dh, k) if chosen == "cholmod" or one_process_mumps else None  # gathered once for both
    if chosen == "cholmod":
        fac = _cholmod_logdet(D, ordering, budget, forced=solver == "cholmod")
    if fac is None and one_process_mumps:
        fac = _mumps_seq_logdet(D, budget)
    del D
    if fac is None:
        mat = dh.petsc_matrix(mass_weighted=True, symmetric=True, exclude_atom=k)
        try:
            fac = mumps_logdet(mat, ordering=ordering if ordering in ORDERINGS else DEFAULT_ORDERING)
        finally:
            mat.destroy()
    if fac.n_null > 0 or not np.isfinite(fac.ln_abs_det):
        raise HpcvibError(f"dynamical matrix is singular beyond the 3 translations "
                          f"({fac.n_null} null pivot(s) after removing atom {k}): the structure is "
                          f"not a stationary point of a bound system, or a part of it is free")
    ln_det = fac.ln_abs_det + 3.0 * np.log(masses.sum() / masses[k])
    log.info("ln det'(D) = %.12f, %d negative eigenvalue(s); %s %s: %.2f s, %d MB (max/rank)",
             ln_det, fac.n_negative, fac.solver.upper(), fac.ordering, fac.seconds, fac.memory_mb_max)
    return PseudoDeterminant(float(ln_det), fac.n_negative, k, fac)


@dataclass
class Modes:
    """Lowest eigenpairs of D: eigenvalues (eV/(Å² amu)), ascending; vectors (3N × k) in the
    original atom order (mass-weighted displacements), gathered on every rank when asked."""

    eigenvalues: np.ndarray
    vectors: np.ndarray | None
    residuals: np.ndarray
    shift: float
    iterations: int
    seconds: float


def count_eigenvalues_below(D, mu: float) -> int:
    """Number of eigenvalues of the symmetric PETSc matrix ``D`` below ``mu`` (exact, by the
    inertia of one MUMPS LDLᵀ factorisation of D − μI)."""
    A = D.duplicate(copy=True)
    try:
        A.shift(-mu)
        return mumps_logdet(A).n_negative
    finally:
        A.destroy()


def _place_shift_below_spectrum(D, bound: float) -> float:
    """A shift σ < λ_min(D), as close as inertia allows: start at −10⁻³‖D‖∞ and move down."""
    sigma = -1e-3 * bound
    while count_eigenvalues_below(D, sigma) > 0:
        if sigma < -bound:
            raise ConvergenceError("could not place the shift below the spectrum of D")
        sigma *= 4.0
    return sigma


def _petsc_vec_from_original(dh, D, vector):
    """A PETSc vector of D's layout holding ``vector`` (3N, original atom order)."""
    v = D.createVecRight()
    lo, hi = v.getOwnershipRange()
    v.setArray(dh.to_petsc_order(vector)[lo:hi])
    return v


def _krylov_schur(dh, D, sigma: float, nev: int, ncv: int, tol: float, max_it: int, initial, deflate=None):
    """Run SLEPc Krylov–Schur with shift-and-invert at σ (below the spectrum) for ``nev`` pairs,
    subspace ``ncv``."""
    from hpcvib.linalg.petsc_env import init_slepc

    SLEPc = init_slepc()
    n = D.getSize()[0]
    eps = SLEPc.EPS().create(comm=D.comm)
    eps.setOptionsPrefix("hpcvib_eps_")
    eps.setOperators(D)
    eps.setProblemType(SLEPc.EPS.ProblemType.HEP)
    eps.setType(SLEPc.EPS.Type.KRYLOVSCHUR)
    eps.setDimensions(nev=nev, ncv=min(n, ncv))
    eps.setWhichEigenpairs(SLEPc.EPS.Which.TARGET_REAL)
    eps.setTarget(sigma)
    eps.setTolerances(tol, max_it)
    eps.setConvergenceTest(SLEPc.EPS.Conv.ABS)
    st = eps.getST()
    st.setType(SLEPc.ST.Type.SINVERT)
    st.setShift(sigma)
    st.destroy()  # drops this Python reference only (eps keeps the ST); see mumps_logdet
    if initial is not None:
        v = _petsc_vec_from_original(dh, D, initial)
        eps.setInitialSpace([v])
        v.destroy()
    if deflate is not None:
        vs = [_petsc_vec_from_original(dh, D, col) for col in np.asarray(deflate).T]
        eps.setDeflationSpace(vs)
        for v in vs:
            v.destroy()
    with petsc_defaults("hpcvib_eps_st_", _mumps_defaults("auto")):
        eps.setFromOptions()
        with log_event("hpcvibEigensolve"):
            eps.solve()
    return eps


def _shift_inertia(eps) -> int:
    """Number of eigenvalues of D below the shift σ of a shift-and-invert ``eps``: the negative
    pivots of its MUMPS LDLᵀ factorisation of D − σI (Sylvester), read after the solve."""
    st = eps.getST()
    ksp = st.getKSP()
    pc = ksp.getPC()
    F = pc.getFactorMatrix()
    try:
        return int(F.getMumpsInfog(12))
    finally:
        for ref in (F, pc, ksp, st):  # Python references only (see mumps_logdet)
            ref.destroy()


def lowest_modes(dh, k: int = 6, tol: float = PAPER_EIGENVALUE_TOL, want_vectors: bool = False,
                 max_it: int = 1000, initial: np.ndarray | None = None, sigma: float | None = None,
                 verify: bool = True, deflate: np.ndarray | None = None) -> Modes:
    """The ``k`` lowest eigenpairs of D by SLEPc Krylov–Schur with shift-and-invert (MUMPS).

    The shift σ is placed below the whole spectrum (checked by the inertia of D − σI), so
    "nearest σ" means "lowest". Convergence: absolute residual ‖Dx − λx‖ ≤ ``tol``
    (eV/(Å² amu); the paper's 1e-6). Completeness is then *proved* by inertia: the number of
    eigenvalues below λ_k + δ counted by one factorisation must equal the number found, else the
    solve is repeated with more vectors (Krylov methods can miss copies of degenerate
    eigenvalues, common in cubic cells). Failure raises :class:`ConvergenceError`.
    ``initial`` (3N, original order) warm-starts the iteration, e.g. with the previous mode.
    Inner loops (saddle searches) may pass a shift ``sigma`` known to lie below the spectrum and
    ``verify=False``: one factorisation instead of four, no completeness proof. ``deflate``
    (3N × m orthonormal columns, original order; exact null vectors of D, e.g. the mass-weighted
    translations of a periodic cell) is projected out of the search space, so the ``k`` pairs
    returned are the lowest of the rest; then ``verify`` must be False. A deflated call may
    place ``sigma`` inside the spectrum, just below the expected λ1 (shift-and-invert converges
    fastest there): the factorisation of D − σI that the solve needs anyway counts the
    eigenvalues below σ (inertia), and when they are not all among the pairs found (plus the m
    null vectors when σ > 0), σ is moved below the lowest one found and the solve repeated.
    """
    from hpcvib.linalg.petsc_env import init_petsc, init_slepc

    if deflate is not None and verify:
        raise ValueError("lowest_modes: a deflated solve cannot be verified by inertia (pass verify=False)")
    PETSc = init_petsc()
    SLEPc = init_slepc()
    log = get_logger("spectral")
    t0 = time.perf_counter()
    D = dh.petsc_matrix(mass_weighted=True, symmetric=True)
    n = D.getSize()[0]
    k = min(k, n)
    try:
        bound = D.norm(PETSc.NormType.INFINITY)  # Gershgorin: every eigenvalue ≥ −‖D‖∞
        if sigma is None:
            sigma = _place_shift_below_spectrum(D, bound)
        # a margin of 4 vectors lets Krylov–Schur catch every copy of a degenerate eigenvalue (the
        # translations' triple zero; cubic cells); a warm-started call with the translations
        # deflated (saddle searches) needs only one
        nev = min(n, k + (1 if deflate is not None else 4))
        n_null = 0 if deflate is None else np.asarray(deflate).reshape(n, -1).shape[1]
        if deflate is not None and abs(sigma) < 1e-6 * bound:
            sigma = -1e-6 * bound  # the null vectors at 0 would be on the fence of the inertia count
        for attempt in range(4):
            # a warm-started unverified call converges in one or two restarts of a small subspace;
            # most of its cost is then the factorisation
            ncv = max(2 * nev + 16, 32) if verify else max(2 * nev + 8, 10)
            eps = _krylov_schur(dh, D, sigma, nev, ncv, tol, max_it, initial, deflate)
            try:
                below_sigma = _shift_inertia(eps) if deflate is not None else 0
                nconv = eps.getConverged()
                its = eps.getIterationNumber()
                vals, vecs, res = [], [], []
                vr = D.createVecRight()
                for i in range(nconv):
                    vals.append(eps.getEigenpair(i, vr).real)
                    res.append(eps.computeError(i, SLEPc.EPS.ErrorType.ABSOLUTE))
                    if want_vectors:
                        vecs.append(np.concatenate(dh.comm.allgather(vr.getArray().copy())))
                vr.destroy()
            finally:
                eps.destroy()
            if nconv < k:
                raise ConvergenceError(f"SLEPc converged {nconv} of {k} lowest eigenpairs of D "
                                       f"(tol {tol:g}, {its} iterations)")
            order = np.argsort(vals)
            vals_sorted = np.asarray(vals)[order]
            if deflate is not None:
                missed = below_sigma - (n_null if sigma > 0 else 0) - int(np.sum(vals_sorted < sigma))
                if missed > 0:
                    log.info("%d eigenvalue(s) below the shift %.4g not found: shifting below %.4g", missed,
                             sigma, vals_sorted[0])
                    sigma = min(sigma, vals_sorted[0]) - max(0.02, 0.5 * abs(vals_sorted[0])) if attempt == 0 \
                        else _place_shift_below_spectrum(D, bound)
                    continue
                break
            mu = vals_sorted[k - 1] + max(10 * tol, 1e-9 * bound)
            found = int(np.sum(vals_sorted < mu))
            exact = count_eigenvalues_below(D, mu) if verify else found
            if exact <= found or nev >= n:
                break
            log.info("inertia finds %d eigenvalues below %.6g, Krylov–Schur %d: retrying with more vectors",
                     exact, mu, found)
            nev = min(n, nev + 2 * (exact - found) + 4)
        else:
            raise ConvergenceError(f"lowest {k} eigenpairs incomplete after {attempt + 1} attempts")
        order = order[:k]
        values = np.asarray(vals)[order]
        residuals = np.asarray(res)[order]
        vectors = np.stack([dh.to_original_order(vecs[i]) for i in order], axis=1) if want_vectors else None
    finally:
        D.destroy()
    seconds = time.perf_counter() - t0
    log.info("lowest %d eigenvalues of D (shift %.3e, %d its, %.2f s): %s", k, sigma, its, seconds,
             np.array2string(values, precision=6))
    return Modes(values, vectors, residuals, sigma, its, seconds)


def dense_eigenvalues(dh, root_only_result: bool = False) -> np.ndarray:
    """All eigenvalues of D (eV/(Å² amu)) by dense LAPACK ``eigvalsh`` — small cells only.
    Gathered and computed on rank 0, broadcast to all ranks."""
    import scipy.linalg

    D = dh.gather_scipy(mass_weighted=True)
    vals = None
    if dh.comm.rank == 0:
        vals = scipy.linalg.eigvalsh(D.toarray())
    if root_only_result:
        return vals
    return dh.comm.bcast(vals, root=0)


#: Largest number of degrees of freedom diagonalised densely by default (≈ 1.8 GB at 15 000).
DENSE_LIMIT_DOF = 15000


#: the slicing interval is [−‖D‖∞, this × ‖D‖∞]: partition boundaries then avoid λ = 0
SLICING_UPPER_STRETCH = 1.2


def full_spectrum(dh, method: str = "auto", tol: float = 1e-10) -> np.ndarray:
    """All 3N eigenvalues of D (eV/(Å² amu)), ascending, on every rank.

    ``method``: ``dense`` (LAPACK eigvalsh on rank 0), ``slicing`` (SLEPc Krylov–Schur spectrum
    slicing over [−‖D‖∞, ‖D‖∞] with MUMPS inertia at the slice ends, distributed over the ranks),
    or ``auto`` (dense up to :data:`DENSE_LIMIT_DOF` degrees of freedom).
    """
    if method == "auto":
        method = "dense" if dh.n_dof <= DENSE_LIMIT_DOF else "slicing"
    if method == "dense":
        return dense_eigenvalues(dh)
    if method != "slicing":
        raise HpcvibError(f"unknown spectrum method {method!r} (dense, slicing, auto)")
    from hpcvib.linalg.petsc_env import init_petsc, init_slepc

    PETSc = init_petsc()
    SLEPc = init_slepc()
    log = get_logger("spectral")
    D = dh.petsc_matrix(mass_weighted=True, symmetric=True)
    t0 = time.perf_counter()
    try:
        bound = D.norm(PETSc.NormType.INFINITY) * (1.0 + 1e-8) + 1e-12
        eps = SLEPc.EPS().create(comm=D.comm)
        try:
            eps.setOptionsPrefix("hpcvib_slice_")
            eps.setOperators(D)
            eps.setProblemType(SLEPc.EPS.ProblemType.HEP)
            eps.setType(SLEPc.EPS.Type.KRYLOVSCHUR)
            eps.setWhichEigenpairs(SLEPc.EPS.Which.ALL)
            # asymmetric, so that no partition boundary (equal sub-intervals) falls on 0, where
            # the three zero modes of a periodic cell sit on either side by round-off ("inconsistent
            # data" between inertia and eigenvalues found, seen on 2 ranks)
            eps.setInterval(-bound, SLICING_UPPER_STRETCH * bound)
            eps.setTolerances(tol, 1000)
            st = eps.getST()
            st.setType(SLEPc.ST.Type.SINVERT)
            st.destroy()  # this Python reference only
            if D.comm.getSize() > 1:
                eps.setKrylovSchurPartitions(D.comm.getSize())
            with petsc_defaults("hpcvib_slice_st_", _mumps_defaults("auto")):
                eps.setFromOptions()
                with log_event("hpcvibSpectrumSlicing"):
                    eps.solve()
            nconv = eps.getConverged()
            vals = np.sort([eps.getEigenvalue(i).real for i in range(nconv)])
        finally:
            eps.destroy()
    finally:
        D.destroy()
    if len(vals) != dh.n_dof:
        raise ConvergenceError(f"spectrum slicing found {len(vals)} of {dh.n_dof} eigenvalues")
    log.info("full spectrum by slicing: %d eigenvalues in %.2f s", len(vals), time.perf_counter() - t0)
    return vals
