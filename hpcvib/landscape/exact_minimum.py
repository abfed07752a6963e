"""Relaxation to a minimum whose last factorisation *is* its exact thermodynamics (small cells).

For cells up to :data:`DENSE_MAX_DOF` unknowns (1024-atom Fe: 3 069) the Hessian with one atom's
rows removed, H_(-k), is factorised densely (LAPACK Cholesky, column-major in place: 0.19 s on
one core at 3 069 unknowns, single precision 0.09 s). A periodic cell's sparse factor fills in to
nearly dense at this size, so no sparse solver is faster here (CHOLMOD 0.5 s, measured).

One factorisation serves three purposes:

* **Newton / chord steps** Δx = H_(-k)⁻¹ F_(-k): the factor is reused for further steps
  (chord iterations, one back-substitution of 2 n² flops each) while the force keeps falling
  fast, and recomputed only when it does not — a strained copy of a relaxed minimum converges
  from the factor of a neighbouring strain in a few cheap steps;
* **inertia**: a Cholesky factorisation exists iff H_(-k) is positive definite, i.e. iff D has
  no negative eigenvalue (Sylvester: D_(-k) = M⁻½ H_(-k) M⁻½ is congruent to H_(-k), and the
  three translations are exactly the removed block, THEORY §3);
* **ln det'(D)** (THEORY §3, Eq. 19–20 input) at the converged configuration:
  ln det'(D) = ln det H_(-k) − 3 Σ_{i≠k} ln m_i + 3 ln(M_tot / m_k).

The factorisation at the converged configuration is always a fresh double-precision one *at
that configuration* (never a chord factor of an earlier point), so the recorded ln det' is exact
to round-off; factors made during the iteration, which only precondition chord steps, are single
precision (half the time; the converged configuration is the same to the force tolerance).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numba as nb
import numpy as np
import scipy.linalg as sla

from hpcvib.errors import ConvergenceError
from hpcvib.linalg.spectral import choose_pinned_atom

#: largest H_(-k) (unknowns) factorised densely; above, the sparse distributed route is used
DENSE_MAX_DOF = 4000
#: two chord steps that reduce max |F| by less than this factor per step, or one step that
#: raises it, trigger a new factorisation (a chord step costs ~20 ms at 1 024 atoms, a
#: factorisation ~0.5 s: slow convergence with an old factor is cheaper than a new factor; the
#: Anderson-accelerated steps do not fall monotonically, hence two steps)
CHORD_CONTRACTION = 0.7
#: chord steps with one factor before a new one is made in any case
MAX_CHORD_STEPS = 30
#: longest Newton/chord displacement of one atom in one step (Å)
MAX_STEP_LENGTH = 0.2
#: chord steps remembered by the Anderson acceleration of the chord iteration
ANDERSON_MEMORY = 6


@dataclass
class DenseFactor:
    """Cholesky factor of H_(-k) (eV/Å²) at one configuration, and its log-determinant."""

    factor: np.ndarray  # upper Cholesky factor, column-major (LAPACK), unknowns 3(N-1)
    pinned_atom: int
    ln_det_h: float
    positions: np.ndarray
    seconds: float

    @property
    def exact(self) -> bool:
        """A double-precision factor: its ln det and inertia are the configuration's to round-off
        (a single-precision one only preconditions chord steps)."""
        return self.factor.dtype == np.float64

    def solve(self, forces: np.ndarray) -> np.ndarray:
        """Δx (N×3, Å) with H_(-k) Δx_(-k) = F_(-k) and Δx_k = 0 (to the factor's precision)."""
        n = len(forces)
        keep = _kept_rows(n, self.pinned_atom)
        rhs = np.asarray(forces, dtype=self.factor.dtype).ravel()[keep]
        potrs = sla.lapack.dpotrs if self.exact else sla.lapack.spotrs
        x, info = potrs(self.factor, rhs, lower=0)
        if info != 0:
            raise ConvergenceError(f"LAPACK potrs failed (info {info})")
        dx = np.zeros(3 * n)
        dx[keep] = x
        return dx.reshape(n, 3)


@dataclass
class ExactMinimum:
    """A relaxed configuration and the exact harmonic data of its last factorisation."""

    atoms: object
    energy: float
    max_force: float
    n_negative: int  # 0: minimum (Cholesky succeeded); > 0 counted by a dense LDLᵀ
    ln_det_prime: float | None  # ln det'(D), None unless n_negative == 0
    pinned_atom: int
    factor: DenseFactor | None = field(repr=False, default=None)
    counts: dict = field(default_factory=dict)


class AndersonChord:
    """Anderson acceleration (type II; Walker & Ni, SIAM J. Numer. Anal. 49, 1715, 2011) of the
    chord iteration x ← x + H₀⁻¹F(x) with a fixed factor H₀.

    Near a minimum F(x) ≈ −H(x − x*), the chord residual r = H₀⁻¹F is linear in x and the
    accelerated iteration is GMRES on H₀⁻¹H: a factor from a neighbouring strain leaves a few
    outlying eigenvalues of H₀⁻¹H that plain chord steps remove at a rate of ~0.4 per step, and
    the acceleration in a few steps. Each step costs one small least-squares problem
    (3N × ``memory``), nothing against the back-substitution that gives r.
    """

    def __init__(self, memory: int = ANDERSON_MEMORY):
        self.memory = memory
        self.reset()

    def reset(self) -> None:
        """Forget the history (a new factor changes what the residuals mean)."""
        self._x = self._r = None
        self._dx, self._dr = [], []

    def step(self, x: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Displacement from ``x`` (flat, Å) given the chord step ``r`` = H₀⁻¹F(x) there."""
        if self._x is not None:
            self._dx.append(x - self._x)
            self._dr.append(r - self._r)
            if len(self._dx) > self.memory:
                self._dx.pop(0)
                self._dr.pop(0)
        self._x, self._r = x.copy(), r.copy()
        if not self._dx:
            return r
        dr = np.column_stack(self._dr)
        gamma = np.linalg.lstsq(dr, r, rcond=1e-10)[0]
        return r - (np.column_stack(self._dx) + dr) @ gamma


def _kept_rows(n_atoms: int, k: int) -> np.ndarray:
    keep = np.ones(3 * n_atoms, dtype=bool)
    keep[3 * k:3 * k + 3] = False
    return keep


@nb.njit(cache=True)
def _scatter_blocks(rows, indptr, cols, blocks, k, out):
    """Write the 3×3 blocks into the dense matrix of the atoms other than ``k`` (column-major
    ``out`` of shape (3(N−1), 3(N−1)); atom a > k sits at block a − 1)."""
    for r in range(len(rows)):
        a = rows[r]
        if a == k:
            continue
        ia = 3 * (a - (a > k))
        for e in range(indptr[r], indptr[r + 1]):
            b = cols[e]
            if b == k:
                continue
            ib = 3 * (b - (b > k))
            for x in range(3):
                for y in range(3):  # row-major writes along the row of a (H is symmetric)
                    out[ia + x, ib + y] = blocks[e, x, y]


def dense_reduced_hessian(potential, atoms, k: int, dtype=np.float64) -> np.ndarray:
    """H_(-k) (eV/Å²) as a column-major dense array, from the exact analytic block rows
    (rounded to ``dtype``)."""
    rows = potential.hessian_rows(atoms)
    n = 3 * (len(atoms) - 1)
    out = np.zeros((n, n), order="F", dtype=dtype)
    _scatter_blocks(rows.rows, rows.indptr, rows.cols, rows.blocks.astype(dtype, copy=False), k, out.T)
    return out


def factorise(potential, atoms, k: int, exact: bool = True) -> DenseFactor | None:
    """Cholesky factor of H_(-k) at ``atoms``, or None when H_(-k) is not positive definite.

    ``exact=False``: a single-precision factor (LAPACK ``spotrf``, half the time of ``dpotrf``:
    0.09 vs 0.19 s at 3 069 unknowns) for chord steps only — iterations to |F| < fmax converge to
    the same configuration with any nearby factor. Its ln det is not the configuration's, and
    None from it means H_(-k) is not positive definite *or* so close to singular (λ_min/λ_max
    below ~1e-7) that Newton steps are unsafe there anyway; inertia and ln det' always come from
    a double-precision factorisation."""
    t = time.perf_counter()
    h = dense_reduced_hessian(potential, atoms, k, np.float64 if exact else np.float32)
    potrf = sla.lapack.dpotrf if exact else sla.lapack.spotrf
    c, info = potrf(h, lower=0, clean=0, overwrite_a=1)
    if info > 0:
        return None
    if info < 0:
        raise ConvergenceError(f"LAPACK potrf: illegal argument {-info}")
    ln_det = 2.0 * float(np.log(np.diagonal(c).astype(np.float64)).sum())
    return DenseFactor(c, k, ln_det, atoms.positions.copy(), time.perf_counter() - t)


def count_negative_eigenvalues(potential, atoms, k: int) -> int:
    """Number of negative eigenvalues of H_(-k) (= of D) by a dense LDLᵀ (Bunch–Kaufman)."""
    h = dense_reduced_hessian(potential, atoms, k)
    _, d, _ = sla.ldl(h, lower=True, check_finite=False)
    return _negative_in_block_diagonal(d)


def _negative_in_block_diagonal(d: np.ndarray) -> int:
    """Negative eigenvalues of the block-diagonal (1×1 and 2×2 blocks) D of a Bunch–Kaufman
    LDLᵀ — by Sylvester's law, those of the factored matrix."""
    n = len(d)
    count, i = 0, 0
    while i < n:
        if i + 1 < n and d[i + 1, i] != 0.0:
            count += int((np.linalg.eigvalsh(d[i:i + 2, i:i + 2]) < 0).sum())
            i += 2
        else:
            count += int(d[i, i] < 0)
            i += 1
    return count


def ln_det_prime_from_hessian(ln_det_h: float, masses: np.ndarray, k: int) -> float:
    """ln det'(D) from ln det H_(-k) (THEORY §3): D_(-k) = M⁻½ H_(-k) M⁻½ and the pinned-atom
    identity ln det'(D) = ln det D_(-k) + 3 ln(M_tot/m_k)."""
    masses = np.asarray(masses, dtype=float)
    ln_m = np.log(masses)
    return float(ln_det_h - 3.0 * (ln_m.sum() - ln_m[k]) + 3.0 * np.log(masses.sum() / masses[k]))


def newton_minimum(atoms, potential, fmax: float = 1e-6, chord: DenseFactor | None = None,
                   max_factorisations: int = 12, max_steps: int = 200) -> ExactMinimum:
    """Newton/chord iterations from ``atoms`` to |F| < ``fmax`` (eV/Å), ending with a fresh
    Cholesky factorisation at the converged configuration (its ln det' and inertia).

    ``chord``: a factor from a nearby configuration (e.g. a neighbouring strain of the same
    minimum) used for the first steps. Raises :class:`ConvergenceError` when the iterations do
    not converge, or when H_(-k) is not positive definite before convergence (the caller falls
    back to a first-order optimiser). A configuration that converges to a stationary point that
    is not a minimum is returned with ``n_negative`` > 0 and no ln det'.
    """
    work = atoms.copy()
    work.calc = None
    masses = work.get_masses()
    k = choose_pinned_atom(masses)
    if 3 * (len(work) - 1) > DENSE_MAX_DOF:
        raise ConvergenceError(f"{len(work)} atoms: too large for the dense route (> {DENSE_MAX_DOF} unknowns)")
    factor = chord if chord is not None and chord.pinned_atom == k and len(chord.positions) == len(work) else None
    counts = {"force_calls": 0, "factorisations": 0, "steps": 0}
    history = [np.inf, np.inf]  # max |F| one and two steps back
    chord_steps = 0
    anderson = AndersonChord()
    for _ in range(max_steps):
        ev = potential.evaluate(work)
        counts["force_calls"] += 1
        f_now = float(np.sqrt((ev.forces ** 2).sum(axis=1)).max())
        if f_now < fmax:
            return _finish(work, potential, ev.energy, f_now, k, masses, factor, counts)
        stalled = f_now > history[0] or f_now > CHORD_CONTRACTION ** 2 * history[1]
        if factor is None or stalled or chord_steps >= MAX_CHORD_STEPS:
            factor = factorise(potential, work, k, exact=False)
            counts["factorisations"] += 1
            chord_steps = 0
            anderson.reset()
            if factor is None:
                raise ConvergenceError(f"H is not positive definite at max |F| = {f_now:.3g} eV/Å")
            if counts["factorisations"] > max_factorisations:
                raise ConvergenceError(f"Newton steps: {max_factorisations} factorisations without "
                                       f"reaching {fmax:g} eV/Å (max |F| = {f_now:.3g})")
        dx = anderson.step(work.positions.ravel(), factor.solve(ev.forces).ravel()).reshape(-1, 3)
        longest = float(np.sqrt((dx ** 2).sum(axis=1)).max())
        if longest > MAX_STEP_LENGTH:
            dx *= MAX_STEP_LENGTH / longest
            anderson.reset()
        work.positions += dx
        counts["steps"] += 1
        chord_steps += 1
        history = [f_now, history[0]] if chord_steps > 1 else [f_now, np.inf]
    raise ConvergenceError(f"Newton steps: no convergence to {fmax:g} eV/Å in {max_steps} steps")


def _finish(work, potential, energy, f_now, k, masses, factor, counts) -> ExactMinimum:
    """Fresh double-precision factorisation at the converged configuration (unless the last one
    was made here)."""
    if factor is None or not factor.exact or not np.array_equal(factor.positions, work.positions):
        factor = factorise(potential, work, k)
        counts["factorisations"] += 1
    if factor is None:
        n_negative = count_negative_eigenvalues(potential, work, k)
        return ExactMinimum(work, energy, f_now, n_negative, None, k, None, counts)
    ln_det = ln_det_prime_from_hessian(factor.ln_det_h, masses, k)
    return ExactMinimum(work, energy, f_now, 0, ln_det, k, factor, counts)


#: Gaussian displacement (Å) that pushes a relaxation off a saddle it converged to
ESCAPE_DISPLACEMENT = 0.05
#: radius (Å) around the most displaced atom in which the escape displacement is applied
ESCAPE_RADIUS = 5.0


def relax_to_minimum(atoms, potential, fmax: float = 1e-6, switch_fmax: float = 1e-2, fire_steps: int = 20000,
                     chord: DenseFactor | None = None, escape_seed=None) -> ExactMinimum:
    """:func:`relax_exact`; when it ends on a saddle (symmetric starting positions often do)
    and ``escape_seed`` is given, the atoms within :data:`ESCAPE_RADIUS` of the atom with the
    largest force-free displacement from the start get a seeded Gaussian displacement of
    :data:`ESCAPE_DISPLACEMENT` and are relaxed once more (``counts['escaped']`` = 1 then)."""
    result = relax_exact(atoms, potential, fmax, switch_fmax, fire_steps, chord)
    if result.n_negative == 0 or escape_seed is None:
        return result
    return escape_saddle(result, atoms, potential, escape_seed, fmax, switch_fmax, fire_steps)


def escape_saddle(result: ExactMinimum, start, potential, seed, fmax: float = 1e-6, switch_fmax: float = 1e-2,
                  fire_steps: int = 20000) -> ExactMinimum:
    """Push a relaxation that ended on a saddle (``result``) off it and relax again: the atoms
    within :data:`ESCAPE_RADIUS` of the atom that moved most from ``start`` get a Gaussian
    displacement of :data:`ESCAPE_DISPLACEMENT` (generator seeded by ``seed``). The returned
    counts add both relaxations and ``escaped`` = 1."""
    from hpcvib.geometry.structures import minimum_image

    rng = np.random.default_rng(seed)
    cell = start.get_cell()
    moved = np.linalg.norm(minimum_image(result.atoms.positions - start.positions, cell), axis=1)
    centre = result.atoms.positions[int(np.argmax(moved))]
    near = np.linalg.norm(minimum_image(result.atoms.positions - centre, cell), axis=1) <= ESCAPE_RADIUS
    pushed = result.atoms.copy()
    pushed.positions[near] += rng.normal(0.0, ESCAPE_DISPLACEMENT, size=(int(near.sum()), 3))
    second = relax_exact(pushed, potential, fmax, switch_fmax, fire_steps)
    for key, v in result.counts.items():
        second.counts[key] = second.counts.get(key, 0) + v
    second.counts["escaped"] = 1
    return second


def fire(atoms, potential, fmax: float, max_steps: int) -> tuple:
    """FIRE (Bitzek et al., PRL 97, 170201, 2006) with ASE's default parameters, on numpy
    arrays and the potential directly (no calculator bookkeeping: ~3 ms less per step at 1 024
    atoms). Moves ``atoms`` in place; returns (converged, force calls)."""
    dt, dt_max, n_min, f_inc, f_dec, a_start, f_a, max_step = 0.1, 1.0, 5, 1.1, 0.5, 0.1, 0.99, 0.2
    velocity = np.zeros_like(atoms.positions)
    a, n_downhill = a_start, 0
    for call in range(1, max_steps + 1):
        forces = potential.evaluate(atoms).forces
        if np.sqrt((forces ** 2).sum(axis=1)).max() < fmax:
            return True, call
        if call > 1:
            power = np.vdot(forces, velocity)
            if power > 0.0:
                velocity = (1.0 - a) * velocity + a * forces * np.sqrt(np.vdot(velocity, velocity) / np.vdot(forces, forces))
                if n_downhill > n_min:
                    dt, a = min(dt * f_inc, dt_max), a * f_a
                n_downhill += 1
            else:
                velocity[:] = 0.0
                a, dt, n_downhill = a_start, dt * f_dec, 0
        velocity += dt * forces
        step = dt * velocity
        norm = np.sqrt(np.vdot(step, step))
        if norm > max_step:
            step *= max_step / norm
        atoms.positions += step
    return False, max_steps


def relax_exact(atoms, potential, fmax: float = 1e-6, switch_fmax: float = 1e-2, fire_steps: int = 20000,
                chord: DenseFactor | None = None) -> ExactMinimum:
    """FIRE until max |F| < ``switch_fmax`` (skipped when the start is already there), then
    :func:`newton_minimum`; if the Newton phase meets a region where H is not positive definite,
    FIRE continues to ten times lower forces and Newton is tried again, then L-BFGS to ``fmax``
    (its result is factorised once for the inertia and ln det')."""
    from ase.optimize import LBFGS

    from hpcvib.potentials.calculator import HpcvibCalculator

    work = atoms.copy()
    work.calc = None
    counts = {"force_calls": 0, "factorisations": 0, "steps": 0}
    for target in (switch_fmax, 0.1 * switch_fmax):
        counts["force_calls"] += fire(work, potential, max(target, fmax), fire_steps)[1]
        try:
            result = newton_minimum(work, potential, fmax, chord=chord)
        except ConvergenceError:
            chord = None
            continue
        for key, v in counts.items():
            result.counts[key] += v
        return result
    calc = HpcvibCalculator(potential)
    work.calc = calc
    if not LBFGS(work, logfile=None).run(fmax=fmax, steps=fire_steps):
        raise ConvergenceError(f"relaxation did not reach {fmax:g} eV/Å in {fire_steps} L-BFGS steps")
    counts["force_calls"] += calc.n_calls
    work.calc = None
    ev = potential.evaluate(work)
    f_now = float(np.sqrt((ev.forces ** 2).sum(axis=1)).max())
    result = _finish(work, potential, ev.energy, f_now, choose_pinned_atom(work.get_masses()), work.get_masses(),
                     None, counts)
    return result
