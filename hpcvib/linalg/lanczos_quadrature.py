"""Quadratic forms of the matrix logarithm, eᵀ ln(D) e, bracketed by Gauss and Gauss–Radau
quadrature from Lanczos (Golub & Meurant, *Matrices, Moments and Quadrature*, 2010, ch. 6–7),
without factorising or diagonalising D: memory O(N), one sparse product per step.

For a symmetric positive definite D (on the subspace the start vector lives in) and the start
vector q₀ = e/‖e‖, k Lanczos steps give the tridiagonal T_k, and

* the k-point **Gauss** rule  G_k = ‖e‖² e₁ᵀ ln(T_k) e₁  is an *upper* bound of eᵀ ln(D) e, since
  every even derivative of ln is negative (error f⁽²ᵏ⁾(η)/(2k)! ∫π_k² dμ ≤ 0);
* the (k+1)-point **Gauss–Radau** rule with a node fixed at a ≤ λ_min(D),
  R_k = ‖e‖² e₁ᵀ ln(T̃_{k+1}) e₁, is a *lower* bound, since every odd derivative is positive
  (error f⁽²ᵏ⁺¹⁾(η)/(2k+1)! ∫(λ − a) π_k² dμ ≥ 0). T̃ is T_k bordered by β_k and the diagonal
  a + δ_k, with (T_k − a) δ = β_k² e_k.

So R_k ≤ eᵀ ln(D) e ≤ G_k, the midpoint is returned with the half-width as its error bound, and
a column stops when the width is below ``tol``. Convergence is geometric with rate about
exp(−4/√κ) per step, κ = λ_max/a: the number of steps grows with the cell's edge (the lowest
acoustic eigenvalue falls as 1/L²), each step is one sparse product over the whole cell.

Translations (and any other exactly known null space) are kept out by projecting every Lanczos
vector onto their complement, so ``ln'`` — the logarithm without the three zero modes of a
periodic cell — is what is integrated. Negative eigenvalues (a saddle) are handled by the caller
flipping them (D + 2|λ| v vᵀ has eigenvalue |λ| on v and the same ln|λ|).

Many start vectors are run together as the columns of a block (independent recurrences sharing
each sparse product, not a block-Lanczos): each column's arithmetic does not depend on which
other columns share its block, so results do not depend on how atoms are split over ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np
from scipy.linalg import eigh_tridiagonal

from hpcvib.errors import ConvergenceError, InputError

#: steps between two evaluations of the Gauss / Gauss–Radau bracket
CHECK_EVERY = 5
#: a column whose next Lanczos vector has this relative norm has met an invariant subspace:
#: the Gauss rule is then exact
BREAKDOWN = 1e-12


@nb.njit(cache=True, parallel=True)
def _csr_times_block(indptr, indices, data, x, out):
    """out = A x for CSR A and a dense block x (n × p), rows in parallel: each output row is
    accumulated in the same order whatever p is, so a column's result does not depend on the
    other columns of its block."""
    for i in nb.prange(len(indptr) - 1):
        row = out[i]
        row[:] = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            row += data[k] * x[indices[k]]


def sparse_block_operator(matrix):
    """X ↦ A X for a scipy sparse ``matrix`` by the threaded kernel :func:`_csr_times_block`."""
    csr = matrix.tocsr()
    csr.sort_indices()
    indptr, indices, data = csr.indptr.astype(np.int64), csr.indices.astype(np.int64), csr.data

    def apply(x):
        x = np.ascontiguousarray(x)
        out = np.empty((csr.shape[0], x.shape[1]))
        _csr_times_block(indptr, indices, data, x, out)
        return out
    return apply


@dataclass
class LogQuadrature:
    """eᵀ ln(D) e for each start vector: ``value`` (midpoint of the bracket), ``half_width``
    (a bound of its error when the lower node ``a`` is below the spectrum), ``steps`` taken."""

    value: np.ndarray
    half_width: np.ndarray
    steps: np.ndarray


def _gauss_and_radau(alpha: np.ndarray, beta: np.ndarray, beta_next: float, lower: float) -> tuple[float, float]:
    """e₁ᵀ ln(T) e₁ for the Gauss tridiagonal T_k (``alpha``, ``beta``) and for its Gauss–Radau
    extension with node ``lower`` (``beta_next`` = β_k)."""
    theta, s = eigh_tridiagonal(alpha, beta)
    if theta[0] <= 0:
        raise ConvergenceError(f"Lanczos Ritz value {theta[0]:.3e} ≤ 0: the operator is not positive definite")
    gauss = float(np.dot(s[0] ** 2, np.log(theta)))
    k = len(alpha)
    if beta_next == 0.0 or k == 0:
        return gauss, gauss
    rhs = np.zeros(k)
    rhs[-1] = beta_next ** 2
    # (T_k − a) δ = β_k² e_k through the eigen-decomposition already at hand
    delta = s @ ((s.T @ rhs) / (theta - lower))
    alpha_ext = np.append(alpha, lower + delta[-1])
    beta_ext = np.append(beta, beta_next)
    theta_r, s_r = eigh_tridiagonal(alpha_ext, beta_ext)
    theta_r = np.maximum(theta_r, lower)  # the fixed node is `lower` up to round-off
    radau = float(np.dot(s_r[0] ** 2, np.log(theta_r)))
    return gauss, radau


def _brackets(alphas: list, betas: list, broken: np.ndarray, check_all: bool, lower: float) -> dict:
    """{column: (Gauss, Gauss–Radau)} of the columns to check now (all, or the broken ones)."""
    a_hist, b_hist = np.array(alphas), np.array(betas)
    columns = range(a_hist.shape[1]) if check_all else np.flatnonzero(broken)
    return {c: _gauss_and_radau(a_hist[:, c], b_hist[:-1, c], 0.0 if broken[c] else b_hist[-1, c], lower)
            for c in columns}


def log_quadratic_forms(matvec, starts: np.ndarray, lower: float, tol: float, max_steps: int = 2000,
                        deflate: np.ndarray | None = None) -> LogQuadrature:
    """Bracket eᵀ ln(D) e for every column e of ``starts`` (n × m).

    Parameters
    ----------
    matvec : callable
        X (n × p) ↦ D X for the symmetric operator D (eV/(Å² amu) for the mass-weighted Hessian).
    starts : ndarray (n, m)
        Start vectors; their components along ``deflate`` are removed first (the quadratic form
        is then that of ln on the complement, ln').
    lower : float
        a > 0, a lower bound of D's spectrum on the complement of ``deflate`` (the Gauss–Radau
        node; a below λ_min keeps the bracket valid, a far below it slows convergence).
    tol : float
        Stop a column when G_k − R_k ≤ ``tol`` (the full width of the bracket).
    max_steps : int
        Lanczos steps at most; a column not converged by then raises :class:`ConvergenceError`.
    deflate : ndarray (n, d), optional
        Orthonormal columns spanning a null space to keep out (the translations).
    """
    if lower <= 0:
        raise InputError(f"the Gauss–Radau node must be positive (got {lower:g})")
    q = np.array(starts, dtype=float, copy=True)
    if deflate is not None:
        q -= deflate @ (deflate.T @ q)
    n, m = q.shape
    norm2 = np.einsum("ij,ij->j", q, q)
    value, half, steps = np.zeros(m), np.zeros(m), np.zeros(m, dtype=int)
    active = np.flatnonzero(norm2 > 0)
    q[:, active] /= np.sqrt(norm2[active])
    q_prev = np.zeros((n, len(active)))
    q = q[:, active]
    beta_prev = np.zeros(len(active))
    alphas, betas = [], []
    for step in range(1, max_steps + 1):
        w = matvec(q) - q_prev * beta_prev
        alpha = np.einsum("ij,ij->j", q, w)
        w -= q * alpha
        if deflate is not None:
            w -= deflate @ (deflate.T @ w)
        beta = np.sqrt(np.einsum("ij,ij->j", w, w))
        alphas.append(alpha)
        betas.append(beta)
        broken = beta <= BREAKDOWN * np.maximum(np.abs(alpha), 1.0)
        check_all = step % CHECK_EVERY == 0 or step == max_steps
        if check_all or broken.any():
            done = np.zeros(len(active), dtype=bool)
            for c, (g, r) in _brackets(alphas, betas, broken, check_all, lower).items():
                if g - r <= tol or broken[c]:
                    j = active[c]
                    value[j], half[j], steps[j] = norm2[j] * 0.5 * (g + r), norm2[j] * 0.5 * (g - r), step
                    done[c] = True
            if done.any():
                keep = ~done
                active, q, w, beta = active[keep], q[:, keep], w[:, keep], beta[keep]
                alphas = [a[keep] for a in alphas]
                betas = [b[keep] for b in betas]
                if not len(active):
                    break
        q_prev, beta_prev = q, beta
        q = w / beta
    if len(active):
        raise ConvergenceError(f"Lanczos quadrature: {len(active)} of {m} start vectors not bracketed to {tol:g} "
                               f"in {max_steps} steps (lower node a = {lower:.3e}; a closer lower bound of "
                               "λ_min converges faster)")
    return LogQuadrature(value, half, steps)
