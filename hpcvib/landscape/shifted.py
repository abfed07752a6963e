"""One factorisation per saddle-search step: D − σI gives the lowest modes *and* the step.

On one process and up to :data:`DENSE_MAX_DOF` unknowns (512-atom a-Si: 1 536; 1 023-atom Fe:
3 069) the mass-weighted Hessian D (eV/(Å² amu)) is shifted by σ below its lowest eigenvalue and
factored once by dense Cholesky (LAPACK ``potrf``). That factor serves three purposes:

* **inertia for free**: the Cholesky factorisation exists iff σ < λ1 (Sylvester), so the shift is
  known to lie below the spectrum — no eigenvalue can be missed; a failed factorisation moves σ
  down and tries again;
* **the lowest modes**: shift-invert Lanczos (ARPACK) on P(D − σI)⁻¹P, started from the previous
  mode, P the projector out of the three rigid translations (exact null vectors of D in a
  periodic cell) — each iteration one pair of triangular solves; LOBPCG preconditioned by the
  same operator when Lanczos misses the tolerance;
* **the step**: the complement of the followed mode is solved exactly, D s = −g on the subspace
  ⊥ {v1, translations}, by conjugate gradients preconditioned with the same factor (the
  preconditioned spectrum (λ_i)/(λ_i − σ) clusters at 1: ~10 iterations), or, where that
  subspace is not positive definite or far from the saddle, the shifted step −(D − σI)⁻¹g.

This replaces, per step, one SLEPc Krylov–Schur solve with its own MUMPS factorisation (AMD
ordering) plus a second, unshifted LDLᵀ factorisation for the Newton step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from hpcvib.errors import ConvergenceError

#: largest number of unknowns (3N) factored densely
DENSE_MAX_DOF = 4000
#: smallest distance (eV/(Å² amu)) kept between σ and the lowest eigenvalue of the last step
MIN_SHIFT_GAP = 1e-3
#: attempts at a shift below the spectrum (each one halves σ's distance to the bottom again)
MAX_SHIFT_TRIES = 12
#: relative residual of the projected-Newton conjugate gradients
CG_TOL = 1e-10
CG_MAX_ITERATIONS = 200


def usable(comm, atoms) -> bool:
    """Whether a search on ``atoms`` over ``comm`` can use this one-process dense route."""
    return comm.Get_size() == 1 and 3 * len(atoms) <= DENSE_MAX_DOF


def dynamical_matrix(potential, atoms) -> tuple[np.ndarray, np.ndarray]:
    """Dense D = M^-1/2 H M^-1/2 (3N × 3N, eV/(Å² amu)), exactly symmetric (its lower triangle
    from the block rows, mirrored), and √m per unknown (√amu)."""
    sqrt_m = np.repeat(np.sqrt(atoms.get_masses()), 3)
    rows = potential.hessian_rows(atoms)
    d = np.empty((3 * len(atoms), 3 * len(atoms)))
    _scatter_symmetric(rows.rows, rows.indptr, rows.cols, rows.blocks, sqrt_m, d)
    return d, sqrt_m


@nb.njit(cache=True)
def _scatter_symmetric(rows, indptr, cols, blocks, sqrt_m, out):
    """out[i, j] = out[j, i] = H_ij / √m_i / √m_j for i ≥ j, H_ij from the block rows (atom a of
    row i, b of column j); every entry of ``out`` is written (the block pattern is symmetric, and
    zero blocks are zeroed here)."""
    out[:, :] = 0.0
    for r in range(len(rows)):
        a = rows[r]
        for e in range(indptr[r], indptr[r + 1]):
            b = cols[e]
            if b > a:
                continue
            for x in range(3):
                i = 3 * a + x
                for y in range(3):
                    j = 3 * b + y
                    if j <= i:
                        v = blocks[e, x, y] / sqrt_m[i] / sqrt_m[j]
                        out[i, j] = v
                        out[j, i] = v


def translations(sqrt_m: np.ndarray) -> np.ndarray:
    """Orthonormal mass-weighted rigid translations (3N × 3)."""
    t = np.zeros((len(sqrt_m), 3))
    for a in range(3):
        t[a::3, a] = sqrt_m[a::3]
    return t / np.linalg.norm(t, axis=0)


@dataclass
class ShiftedFactor:
    """Cholesky factor of D − σI with σ below the spectrum of D (translations excluded)."""

    d: np.ndarray
    sigma: float
    factor: tuple
    t: np.ndarray

    def project(self, x: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
        """x without its components along the translations (and along the unit vector ``extra``)."""
        y = x - self.t @ (self.t.T @ x)
        if extra is not None:
            y = y - extra * float(extra @ y)
        return y

    def solve(self, b: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
        """P (D − σI)⁻¹ P b (b a vector, or a block of columns when ``extra`` is None)."""
        from scipy.linalg import cho_solve

        return self.project(cho_solve(self.factor, self.project(b, extra), check_finite=False), extra)


def factor_below_spectrum(d: np.ndarray, t: np.ndarray, sigma: float) -> ShiftedFactor:
    """Factor D − σI (σ < 0, so the translations' zero eigenvalue is above it), moving σ down
    until the Cholesky factorisation exists: then σ < λ_min(D)."""
    from scipy.linalg import LinAlgError, cho_factor

    if sigma >= 0.0:
        raise ValueError(f"the shift must be negative (got {sigma})")
    for _ in range(MAX_SHIFT_TRIES):
        shifted = d.copy()
        shifted[np.diag_indices_from(shifted)] -= sigma
        try:  # D is exactly symmetric: its transpose is the same matrix, column-major, factored in place
            factor = cho_factor(shifted.T, lower=True, overwrite_a=True, check_finite=False)
            return ShiftedFactor(d, sigma, factor, t)
        except LinAlgError:
            sigma -= max(MIN_SHIFT_GAP, abs(sigma))
    raise ConvergenceError(f"no shift below the spectrum of D found down to σ = {sigma:.3g} eV/(Å² amu)")


#: block size of LOBPCG (the two wanted pairs and guards against a cluster above them)
BLOCK = 4
#: residual ‖D x − λ x‖ (eV/(Å² amu)) at which the lowest pair is converged
EIGEN_TOL = 1e-7
MAX_EIGEN_ITERATIONS = 300


#: relative tolerance of the shift-invert Lanczos (ARPACK) on the eigenvalues of P(D − σI)⁻¹P;
#: the residual in D is checked against the caller's tolerance afterwards
LANCZOS_TOL = 1e-10
#: Lanczos basis size of the shift-invert solve
LANCZOS_BASIS = 10
#: the first, loose shift-invert solve (relative tolerance on the eigenvalues of (D − σI)⁻¹):
#: the followed pair, isolated below the rest, is exact to round-off by then, and the second one
#: (in the soft cluster of a glass) to ~1e-4 — 20 instead of 50 solves on 512-atom a-Si
LANCZOS_LOOSE_TOL = 1e-3
#: residual (eV/(Å² amu)) enough for a second pair whose eigenvalue is positive beyond its
#: residual: only its sign (projected Newton or not) and rough size (the next shift) are used
SECOND_PAIR_TOL = 1e-3


def lowest_pairs(op: ShiftedFactor, k: int = 2, start: np.ndarray | None = None,
                 tol: float = EIGEN_TOL, full_block: bool = False) -> tuple:
    """The k lowest vibrational eigenpairs (ascending; vectors mass-weighted, unit) of D: first by
    shift-invert Lanczos on P(D − σI)⁻¹P (ARPACK; eigenvalue ν ↦ λ = σ + 1/ν, the translations
    projected out, so they map to ν = 0 and are never found), started from the previous mode —
    one pair of triangular solves per iteration, 3–4× cheaper than the block method measured on
    512-atom a-Si. A loose solve (:data:`LANCZOS_LOOSE_TOL`) first; a tight one when it misses
    ``tol`` for the lowest pair or for a pair that may be negative (positive ones need only
    :data:`SECOND_PAIR_TOL`); :func:`lowest_pairs_lobpcg` when that misses too.
    ``full_block`` returns a warm-start block as a third value."""
    n = op.d.shape[0]
    for lanczos_tol in (LANCZOS_LOOSE_TOL, LANCZOS_TOL):
        try:
            w, vecs = _shift_invert_lanczos(op, k, start, lanczos_tol)
        except Exception:  # ARPACK did not converge: the block method decides
            return lowest_pairs_lobpcg(op, k, start, tol, full_block)
        if vecs.shape == (n, k) and _accurate_enough(op, w, vecs, tol):
            return (w, vecs, vecs) if full_block else (w, vecs)
        start = vecs
    return lowest_pairs_lobpcg(op, k, start, tol, full_block)


def _accurate_enough(op: ShiftedFactor, w: np.ndarray, vecs: np.ndarray, tol: float) -> bool:
    """Residuals ‖D x − λ x‖ within ``tol`` for the lowest pair and for every pair that may be
    negative; within :data:`SECOND_PAIR_TOL` for the others (their eigenvalue is positive: an
    eigenvalue lies within the residual of λ)."""
    residual = np.linalg.norm(op.d @ vecs - vecs * w, axis=0)
    loose = (np.arange(len(w)) > 0) & (w > residual)
    return bool(np.all(residual <= np.where(loose, max(tol, SECOND_PAIR_TOL), tol)))


def _shift_invert_lanczos(op: ShiftedFactor, k: int, start, lanczos_tol: float = LANCZOS_TOL) -> tuple:
    from scipy.sparse.linalg import LinearOperator, eigsh

    n = op.d.shape[0]
    v0 = np.random.default_rng(n).standard_normal(n) if start is None else \
        np.asarray(start, dtype=float).reshape(n, -1)[:, 0].copy()
    v0 = op.project(v0)
    inverse = LinearOperator((n, n), matvec=lambda b: op.solve(np.ravel(b)), dtype=float)
    nu, vecs = eigsh(inverse, k=k, which="LA", v0=v0, tol=lanczos_tol, ncv=min(n - 1, max(LANCZOS_BASIS, 2 * k + 2)))
    w = op.sigma + 1.0 / nu
    order = np.argsort(w)
    vecs = op.project(vecs[:, order])  # a loosely converged Ritz vector keeps ~1e-8 of them
    return w[order], vecs / np.linalg.norm(vecs, axis=0)


def lowest_pairs_lobpcg(op: ShiftedFactor, k: int = 2, start: np.ndarray | None = None,
                        tol: float = EIGEN_TOL, full_block: bool = False) -> tuple:
    """The k lowest vibrational eigenpairs (ascending; vectors mass-weighted, unit) of D by LOBPCG
    preconditioned with the exact P(D − σI)⁻¹P (block solves: BLAS 3), constrained away from the
    translations. Seeded with ``start`` (the previous mode or, better, the previous whole block:
    ``full_block`` returns it as a third value) and reproducible random vectors.
    Converged when the residuals ‖D x − λ x‖ < ``tol`` (eV/(Å² amu)), a bound on the distance of
    λ to an eigenvalue. Near a minimum of a large cell the lowest eigenvalues sit in a dense
    cluster (the acoustic band edge: 1 023-atom Fe, 0.0090, 0.0090, 0.0091, ...) and only a loose
    ``tol`` is affordable (0.4 s at 1e-4, 11 s at 1e-8); at a saddle the negative one is isolated.
    A result short of ``tol`` after :data:`MAX_EIGEN_ITERATIONS` is returned when its residual is
    below 100 ``tol``, else :class:`ConvergenceError`."""
    import warnings

    from scipy.sparse.linalg import LinearOperator, lobpcg

    n = op.d.shape[0]
    block = max(BLOCK, k + 2)
    x = np.random.default_rng(n).standard_normal((n, block))
    if start is not None:  # the previous mode, or the previous whole block
        start = np.asarray(start, dtype=float).reshape(n, -1)[:, :block]
        x[:, :start.shape[1]] = start
    solve = LinearOperator((n, n), matvec=lambda b: op.solve(np.ravel(b)), matmat=op.solve, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w, vecs = lobpcg(op.d, x, M=solve, Y=op.t, tol=tol, maxiter=MAX_EIGEN_ITERATIONS, largest=False)
    order = np.argsort(w)
    w, vecs = w[order], vecs[:, order] / np.linalg.norm(vecs[:, order], axis=0)
    residual = np.linalg.norm(op.d @ vecs[:, :k] - vecs[:, :k] * w[:k], axis=0)
    if np.any(residual > 100 * tol):
        raise ConvergenceError(f"lowest modes not converged (residuals {residual} > {tol:g})")
    if full_block:
        return w[:k], vecs[:, :k], vecs
    return w[:k], vecs[:, :k]


def complement_newton(op: ShiftedFactor, g: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """s with P_v D P_v s = −P_v g on the complement of v and the translations, by conjugate
    gradients preconditioned with (D − σI)⁻¹; ``None`` when D is not positive definite there."""
    r = -op.project(g, v)
    s = np.zeros_like(r)
    z = op.solve(r, v)
    p = z.copy()
    rz = float(r @ z)
    norm0 = float(np.linalg.norm(r)) or 1.0
    for _ in range(CG_MAX_ITERATIONS):
        q = op.project(op.d @ p, v)
        curvature = float(p @ q)
        if curvature <= 0.0:
            return None
        alpha = rz / curvature
        s += alpha * p
        r -= alpha * q
        if np.linalg.norm(r) < CG_TOL * norm0:
            return s
        z = op.solve(r, v)
        rz, rz_old = float(r @ z), rz
        p = z + (rz / rz_old) * p
    return s


def partitioned_rfo_step(op: ShiftedFactor, g: np.ndarray, v: np.ndarray, lam: float, newton: bool) -> np.ndarray:
    """The sum of :func:`partitioned_rfo_parts`."""
    along, across = partitioned_rfo_parts(op, g, v, lam, newton)
    return along + across


def partitioned_rfo_parts(op: ShiftedFactor, g: np.ndarray, v: np.ndarray, lam: float,
                          newton: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mass-weighted step s (3N) of partitioned rational-function optimisation (Baker 1986):
    uphill along the followed mode v (eigenvalue λ), whatever the sign of λ,
    s_v = −g_v/(λ − λ_p), λ_p = ½(λ + √(λ² + 4g_v²)) — Newton's −g_v/λ at a saddle's basin;
    downhill in the complement — exactly (``newton``: projected Newton by preconditioned CG) or
    by the shifted step −(D − σI)⁻¹g (every component downhill since σ < all eigenvalues).
    Returns the two parts (along v, across it).

    Parameters
    ----------
    g : mass-weighted gradient −M^-1/2 F (eV/(Å √amu)).
    v : unit mass-weighted eigenvector of D, eigenvalue ``lam`` (eV/(Å² amu)).
    """
    g_v = float(v @ g)
    lam_p = 0.5 * (lam + np.sqrt(lam * lam + 4.0 * g_v * g_v))
    along = -g_v / (lam - lam_p) * v if lam - lam_p != 0.0 else np.zeros_like(g)
    across = complement_newton(op, g, v) if newton else None
    if across is None:
        across = -op.solve(g, v)
    return along, across
