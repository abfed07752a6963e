"""Saddle-point search in the spirit of ARTn, with the exact sparse Hessian (paper Sec. II A).

One search from a relaxed minimum x0 (all steps collective over a rank group ``comm``; forces
are evaluated redundantly on every rank, the Hessian is assembled in parallel):

1. *activation* — a random displacement d of an atom and its neighbours within
   ``activation_radius`` (seeded), then pushes x ← x + δ d with a few steepest-descent steps in
   the hyperplane ⊥ d, until the lowest eigenvalue λ1 of D falls below ``eigenvalue_threshold``
   (default −2e-3 eV/(Å² amu), about −0.1 eV/Å² on the Hessian of Si or Fe): the configuration
   has left the harmonic basin. The mode comes, on one process and up to 4 000 unknowns
   (``mode_solver = "dense"``), from one dense Cholesky factor of D − σI with σ proven below the
   spectrum by the factorisation itself, and shift-invert Lanczos on that factor
   (:mod:`hpcvib.landscape.shifted`); otherwise from SLEPc Krylov–Schur with MUMPS
   shift-and-invert (warm-started, translations deflated, the shift checked by its inertia);
2. *convergence* — on the dense route (``newton``, default) **exact min-mode following**, the
   mode and the step from the same factor at every step: where λ1 < 0 a trust-region
   partitioned-RFO step (uphill along the mode; across it exact projected Newton by CG
   preconditioned with the factor, or the shifted step where λ2 < 0; each part capped at the
   trust radius on its own; the mode tracked by overlap where two eigenvalues are negative, the
   trust radius set by how well the quadratic model predicted the new gradient); where λ1 ≥ 0
   (a convex region) a step uphill along the lowest mode
   only, with no descent across it (the dimer method's convex-region rule), so that the search
   cannot slide back into the basin — the failure that ended most ARTn searches ("lost the
   negative mode": 58 % of the failures of the 512-atom a-Si job). On several ranks (SLEPc
   route) and without ``newton``: ARTn steps (climb along u, a few steepest-descent steps ⊥ u,
   their step factor halved after a step that raised the energy; back to activation along the
   last unstable direction when the negative mode is lost, at most ``max_returns`` times), with
   eigenvector-following Newton steps once max |F| < ``newton_force`` and only λ1 < 0.
   Converged at max |F| < ``fmax`` (paper: 1e-7 eV/Å); at most ``max_convergence_steps``;
3. *confirmation* — the inertia of one sparse LDLᵀ factorisation must be exactly 1; then the
   saddle is pushed along ±u and relaxed to both adjacent minima (FIRE, then Newton steps with
   the exact Hessian); the event is kept only when one side is the initial minimum
   (connectivity) and the other is not.

Every failure is returned as a result with ``status = "failed"`` and its reason, never raised.
``ArtnResult`` carries ΔE, the exact Vineyard ln ν* (Eq. 24–25), force/Hessian/eigensolver call
counts and timings. :func:`duplicate_events` applies the paper's duplicate criterion (energy and
displacement of the most displaced atom).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from hpcvib.errors import ConvergenceError, HpcvibError
from hpcvib.geometry.structures import minimum_image
from hpcvib.landscape import shifted
from hpcvib.log import get_logger

#: A warm-started eigensolve places its shift σ this far (eV/(Å² amu)), or half of |λ1|, below
#: min(previous λ1, 0). Close shifts separate λ1 from the dense soft spectrum of a glass (4 096-atom
#: a-Si minimum: 7 Krylov–Schur restarts, 3.7 s at σ = −1e-3; 18 restarts, 6.2 s at −0.02); when λ1
#: jumps below σ (another mode softens), the inertia check in ``lowest_modes`` repeats the solve
#: lower (6 % of the calls on 512-atom a-Si; 1.5 % at −0.02, where without the check those were
#: silently wrong).
SHIFT_BELOW_PREVIOUS = 1e-3
#: mode residual tolerance during min-mode following: MODE_TOL_PER_FORCE × max|F| (eV/Å), between
#: MIN_MODE_TOL and shifted.EIGEN_TOL (eV/(Å² amu)) — loose far from the saddle, tight at it
MODE_TOL_PER_FORCE = 1e-2
MIN_MODE_TOL = 1e-10
#: trust-region update of min-mode following from the quadratic model's gradient error
#: ‖g_new − (g + D s)‖ / ‖g‖ (mass-weighted): above POOR_MODEL the step went beyond where the
#: model holds (halve the radius), below GOOD_MODEL a capped step may grow it (×1.5)
POOR_MODEL = 0.5
GOOD_MODEL = 0.25


@dataclass
class ArtnSettings:
    """Parameters of one search (lengths Å, forces eV/Å, eigenvalues of D in eV/(Å² amu))."""

    activation_radius: float = 3.0
    initial_displacement: float = 0.1
    push_step: float = 0.1
    eigenvalue_threshold: float = -2e-3
    max_returns: int = 3
    min_trust: float = 0.01  # Å: the smallest trust radius of min-mode following
    max_convex_steps: int = 20  # uphill steps along a mode of λ1 ≥ 0 in a row before giving up
    mode_solver: str = "dense"  # "dense": one shifted factor per step (one process, ≤ 4000 unknowns); "slepc"
    activation_mode_tol: float = 1e-4  # eigen-residual (eV/(Å² amu)) enough to compare λ1 with the threshold
    max_activation_steps: int = 40
    perpendicular_steps_activation: int = 4
    perpendicular_steps: int = 6
    perpendicular_alpha: float = 0.05
    max_move: float = 0.1
    climb_step: float = 0.15
    max_convergence_steps: int = 100
    fmax: float = 1e-7
    newton: bool = True
    newton_force: float = 0.5
    push_off: float = 0.15
    relax_fmax: float = 1e-6
    same_minimum_tol: float = 0.05
    activation: str = "defect"  # "defect" (energy or coordination unlike the host's: activation_candidates) or "random"


@dataclass
class ArtnResult:
    status: str
    reason: str = ""
    atom: int = -1
    seed: int = 0
    saddle: object = None
    final: object = None
    energies: dict = field(default_factory=dict)
    delta_E_eV: float = float("nan")
    ln_nu_THz: float = float("nan")
    lambda_neg: float = float("nan")
    n_negative: int = -1
    ln_det_minimum: float = float("nan")
    ln_abs_det_saddle: float = float("nan")
    ln_det_final: float = float("nan")
    max_displacement_A: float = float("nan")
    counts: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("saddle")
        d.pop("final")
        return d


@dataclass
class Mode:
    """Lowest non-translational eigenpair of D at one configuration."""

    eigenvalue: float  # λ1 of D, eV/(Å² amu)
    direction: np.ndarray  # unit Cartesian direction u (N×3)
    curvature: float  # uᵀ H u, eV/Å²
    vector: np.ndarray  # the D-space eigenvector (3N), for warm starts
    second_eigenvalue: float  # the next non-translational eigenvalue (inf when not computed)
    factor: object = None  # the shifted factor it came from (one-process dense route), for the step
    block: np.ndarray | None = None  # the eigenvector block it came from (dense route), for warm starts and tracking


class _Counter:
    def __init__(self):
        self.forces = self.hessians = self.modes = self.newton_steps = 0
        self.activation_steps = self.convergence_steps = 0

    def as_dict(self):
        return dict(vars(self))


def displacement(a, b) -> np.ndarray:
    """Per-atom minimum-image displacement b − a (Å) with the rigid translation (median) removed."""
    d = minimum_image(b.positions - a.positions, a.get_cell())
    return d - np.median(d, axis=0)


def same_minimum(a, b, tol: float) -> bool:
    return len(a) == len(b) and float(np.linalg.norm(displacement(a, b), axis=1).max()) < tol


def mass_weighted_translations(atoms) -> np.ndarray:
    """The three rigid translations of a periodic cell in mass-weighted coordinates (3N × 3,
    orthonormal columns): exact null vectors of D."""
    return shifted.translations(np.repeat(np.sqrt(atoms.get_masses()), 3))


def cartesian_direction(vector, atoms) -> np.ndarray:
    """The Cartesian displacement (N×3) of a mass-weighted eigenvector of D (3N): v_i / √m_i."""
    return (np.asarray(vector) / np.repeat(np.sqrt(atoms.get_masses()), 3)).reshape(-1, 3)


def _tracked(new: "Mode", previous: "Mode", atoms) -> "Mode":
    """Mode tracking (eigenvector following, Baker 1986): where both of the two lowest
    eigenvalues are negative, follow the one whose eigenvector overlaps the previously followed
    mode more — not simply the lowest — so that a second mode softening beside the followed one
    does not switch the climb to it (the other is then minimised along, like every other mode).
    Seen in 512-atom a-Si searches that cycled A → B → C → A for 100 steps: the followed
    λ ≈ −0.023 and a soft mode that a step turned to λ ≈ −0.085 took turns being lowest."""
    if new.block is None or new.block.shape[1] < 2 or new.second_eigenvalue >= 0:
        return new
    overlaps = np.abs(previous.vector @ new.block[:, :2])
    if overlaps[1] <= overlaps[0]:
        return new
    v = new.block[:, 1]
    return _dense_mode_of(atoms, new.second_eigenvalue, v, new.eigenvalue, new.factor,
                          np.column_stack([v, new.block[:, 0]]))


def _dense_mode_of(atoms, lam: float, v: np.ndarray, second: float, factor, block) -> "Mode":
    """The :class:`Mode` of eigenpair (λ, v) of D at ``atoms`` (its unit Cartesian direction and
    curvature), with the factor and eigenvector block it came from."""
    u = cartesian_direction(v, atoms)
    scale = np.linalg.norm(u)
    return Mode(float(lam), u / scale, float(lam) / scale ** 2, v, float(second), factor, block)


def _quadratic_model_error(mode: "Mode", x, f_old: np.ndarray, f_new: np.ndarray, step: np.ndarray) -> float:
    """‖g_new − (g_old + D s)‖ / ‖g_old‖ of a step s (Å) with the mode's dense D (mass-weighted
    gradients g = −M^-1/2 F): how far the quadratic model, on which the step was computed, held."""
    if mode.factor is None:
        return 0.0
    sqrt_m = np.repeat(np.sqrt(x.get_masses()), 3)
    g_old, g_new = -f_old.ravel() / sqrt_m, -f_new.ravel() / sqrt_m
    predicted = g_old + mode.factor.d @ (step.ravel() * sqrt_m)
    return float(np.linalg.norm(g_new - predicted) / (np.linalg.norm(g_old) or 1.0))


def _shift_below(previous: "Mode | None") -> float:
    """Shift for the next mode solve: :data:`SHIFT_BELOW_PREVIOUS` (or half of |λ|) below
    min(previous lowest λ, 0) — the lowest of its two, since a tracked mode need not be the
    lowest; always negative."""
    last = min(previous.eigenvalue, previous.second_eigenvalue) if previous is not None else 0.0
    return min(last, 0.0) - max(SHIFT_BELOW_PREVIOUS, 0.5 * abs(last))


#: an atom is 'unlike the host' when its energy differs from the median atom's by more than
#: this many robust standard deviations (1.4826 × median absolute deviation) ...
ACTIVATION_SPREADS = 4.0
#: ... and by more than this (eV), so that round-off and far-field strain never count
ACTIVATION_MIN_DEVIATION = 0.02
ACTIVATION_RULES = ("defect", "random")


#: first-shell radius of the coordination numbers, × the median nearest-neighbour distance
#: (bcc: first and second shells, 14; fcc 12; a-Si 4 — its second shell is at 1.6×)
COORDINATION_SHELL = 1.2


def activation_candidates(atoms, potential) -> np.ndarray:
    """Atoms where a search should start (the documented rule of ``activation = "defect"``):
    :func:`defect_atoms` of the relaxed configuration — in a crystal with a point defect the
    atoms around the defect (the bulk atoms all share the host's energy and coordination); in a
    glass the atoms of unusual environments: coordination defects, strained bonds. A cell with no
    such atom (a perfect crystal) returns every atom."""
    return defect_atoms(atoms, potential.evaluate(atoms).energies)


def defect_atoms(atoms, energies: np.ndarray) -> np.ndarray:
    """Atoms whose environment differs from the host's: those of :func:`atoms_unlike_host`
    (per-atom energy, eV) and those whose coordination number (:func:`coordination_numbers`)
    differs from the cell's most common one; every atom when none does."""
    energies = np.asarray(energies, dtype=float)
    odd = np.zeros(len(energies), dtype=bool)
    by_energy = atoms_unlike_host(energies)
    if len(by_energy) < len(energies):
        odd[by_energy] = True
    coordination = coordination_numbers(atoms)
    odd |= coordination != np.bincount(coordination).argmax()
    return np.flatnonzero(odd) if odd.any() else np.arange(len(energies))


def coordination_numbers(atoms) -> np.ndarray:
    """Neighbours of each atom within :data:`COORDINATION_SHELL` × the median nearest-neighbour
    distance (periodic images included)."""
    from hpcvib.geometry.neighbours import neighbour_list

    n = len(atoms)
    volume = abs(float(np.linalg.det(np.asarray(atoms.get_cell()))))
    reach = 1.5 * (volume / n) ** (1.0 / 3.0)  # beyond every nearest neighbour of a condensed phase
    nl = neighbour_list(atoms, reach)
    counts = np.diff(nl.indptr)
    nearest = np.full(n, np.inf)
    has = counts > 0
    nearest[nl.centres[has]] = np.minimum.reduceat(nl.distance, nl.indptr[:-1][has])
    shell = COORDINATION_SHELL * float(np.median(nearest[np.isfinite(nearest)])) if has.any() else 0.0
    within = nl.distance <= shell
    coordination = np.zeros(n, dtype=np.int64)
    np.add.at(coordination, np.repeat(nl.centres, counts), within.astype(np.int64))
    return coordination


def atoms_unlike_host(energies: np.ndarray) -> np.ndarray:
    """Atoms whose per-atom energy e_i differs from the host's typical value — the median over
    the cell — by more than max(:data:`ACTIVATION_MIN_DEVIATION`, :data:`ACTIVATION_SPREADS` ×
    the robust spread 1.4826·median|e_i − median|); every atom when none does."""
    energies = np.asarray(energies, dtype=float)
    median = np.median(energies)
    deviation = np.abs(energies - median)
    threshold = max(ACTIVATION_MIN_DEVIATION, ACTIVATION_SPREADS * 1.4826 * float(np.median(deviation)))
    chosen = np.flatnonzero(deviation > threshold)
    return chosen if len(chosen) else np.arange(len(energies))


def activation_atom(pool: np.ndarray, index: int, seed) -> int:
    """The centre of search number ``index`` (0, 1, ...) from one minimum: the atoms of ``pool``
    in a seeded random order, each once before any is drawn again — a run of searches spreads
    over every candidate site instead of drawing some repeatedly (with replacement, 24 draws
    from 39 candidates put about a quarter of them on an atom already drawn)."""
    order = np.random.default_rng(seed).permutation(len(pool))
    return int(pool[order[index % len(pool)]])


def activation_direction(atoms, atom: int, radius: float, rng) -> np.ndarray:
    """Random unit vector (N×3) on ``atom`` and its neighbours within ``radius``, no net translation."""
    vec = minimum_image(atoms.positions - atoms.positions[atom], atoms.get_cell())
    near = np.linalg.norm(vec, axis=1) <= radius
    d = np.zeros_like(atoms.positions)
    d[near] = rng.normal(size=(int(near.sum()), 3))
    d[near] -= d[near].mean(axis=0)
    return d / np.linalg.norm(d)


class SaddleSearch:
    """A search engine bound to a potential and a rank group."""

    def __init__(self, comm, potential, settings: ArtnSettings | None = None):
        from hpcvib.potentials import load_potential

        self.comm = comm
        self.pot = load_potential(potential)
        self.s = settings or ArtnSettings()
        self.log = get_logger("artn")

    # ---------------------------------------------------------------- primitives
    def _forces(self, atoms, count):
        count.forces += 1
        ev = self.pot.evaluate(atoms)
        return ev.energy, ev.forces

    def lowest_mode(self, atoms, previous: Mode | None, count, tol: float = shifted.EIGEN_TOL) -> Mode:
        """The lowest non-translational eigenpair of D (and the next eigenvalue), warm-started
        from ``previous``: on one process and small cells from one dense factor of D − σI that
        also serves the step (:mod:`hpcvib.landscape.shifted`), else by SLEPc."""
        from hpcvib.linalg.hessian import assemble_hessian
        from hpcvib.linalg.spectral import lowest_modes

        count.modes += 1
        if self.s.mode_solver == "dense" and shifted.usable(self.comm, atoms):
            return self._dense_lowest_mode(atoms, previous, tol)
        dh = assemble_hessian(self.comm, atoms, self.pot)
        t = mass_weighted_translations(atoms)
        if previous is None:  # first call of a search: shift placed by inertia, result verified
            modes = lowest_modes(dh, k=4, want_vectors=True)
        else:  # warm start with the translations deflated, one factorisation, the shift close below
            # the previous λ1; lowest_modes moves it down when its inertia shows a missed eigenvalue
            modes = lowest_modes(dh, k=2, want_vectors=True, initial=previous.vector, sigma=_shift_below(previous),
                                 verify=False,
                                 deflate=t)
        vecs = modes.vectors
        trans = np.linalg.norm(t.T @ vecs, axis=0)
        candidates = [i for i in np.argsort(modes.eigenvalues) if trans[i] < 0.5]
        if not candidates:
            raise ConvergenceError("no non-translational mode among the 4 lowest")
        i = candidates[0]
        v = vecs[:, i] - t @ (t.T @ vecs[:, i])
        v /= np.linalg.norm(v)
        u = cartesian_direction(v, atoms)
        scale = np.linalg.norm(u)
        lam = float(modes.eigenvalues[i])
        second = float(modes.eigenvalues[candidates[1]]) if len(candidates) > 1 else float("inf")
        return Mode(lam, u / scale, lam / scale ** 2, v, second)

    def _dense_lowest_mode(self, atoms, previous: Mode | None, tol: float) -> Mode:
        d, sqrt_m = shifted.dynamical_matrix(self.pot, atoms)
        factor = shifted.factor_below_spectrum(d, shifted.translations(sqrt_m), _shift_below(previous))
        start = None if previous is None else (previous.block if previous.block is not None else previous.vector)
        return self._dense_mode(atoms, factor, start, tol)

    @staticmethod
    def _dense_mode(atoms, factor, start, tol: float) -> Mode:
        lams, vecs, block = shifted.lowest_pairs(factor, 2, start, tol, full_block=True)
        return _dense_mode_of(atoms, lams[0], vecs[:, 0], lams[1], factor, block)

    def _rfo_step(self, x, f, mode: Mode, trust: float, count) -> tuple[np.ndarray, bool]:
        """Partitioned-RFO step (N×3, Å) with the mode's own shifted factor: uphill along the mode,
        exact projected Newton across it when only λ1 is negative, else the shifted step. Each
        part is capped at ``trust`` Å per atom on its own, so that steep descent across the mode
        (far from the saddle) cannot shrink the climb along it. Also says whether a cap applied."""
        newton = mode.second_eigenvalue > 0 and mode.eigenvalue < 0
        count.newton_steps += int(newton)
        sqrt_m = np.repeat(np.sqrt(x.get_masses()), 3)
        parts = shifted.partitioned_rfo_parts(mode.factor, -f.ravel() / sqrt_m, mode.vector, mode.eigenvalue, newton)
        step, capped = np.zeros_like(x.positions), False
        for part in parts:
            move = (part / sqrt_m).reshape(-1, 3)
            move -= move.mean(axis=0)
            longest = float(np.linalg.norm(move, axis=1).max())
            if longest > trust:
                move *= trust / longest
                capped = True
            step += move
        return step, capped

    def _rfo_converge(self, x, f, mode: Mode, count) -> tuple[bool, Mode]:
        """Converge to the saddle from ``x`` (forces ``f``, a fresh ``mode`` with its factor) by
        exact min-mode following, one factorisation per step: where λ1 < 0 a trust-region
        partitioned-RFO step (uphill along the mode, exact projected Newton across it); where
        λ1 ≥ 0 (a convex region: the search has slid off the unstable ridge) a step uphill along
        the lowest mode only, with no descent across it — the dimer method's rule for convex
        regions (Henkelman & Jónsson 1999), of ``push_step`` Å for the atom that moves most,
        which keeps a perpendicular relaxation from carrying the configuration back into the
        basin. The trust radius (Å per atom) is halved when a step loses the negative mode and
        grows (×1.5, up to ``climb_step``) after capped steps that keep it. Returns (converged,
        last mode); not converged after ``max_convex_steps`` convex steps in a row."""
        s = self.s
        trust, convex = s.climb_step, 0
        while True:
            if float(np.linalg.norm(f, axis=1).max()) < s.fmax:
                return True, mode
            if count.convergence_steps >= s.max_convergence_steps:
                raise ConvergenceError(f"saddle not converged to {s.fmax:g} eV/Å in {s.max_convergence_steps} steps")
            count.convergence_steps += 1
            if mode.eigenvalue < 0:
                convex = 0
                step, capped = self._rfo_step(x, f, mode, trust, count)
            else:
                convex += 1
                if convex > s.max_convex_steps:
                    return False, mode
                u = mode.direction
                step = -np.sign(np.sum(f * u) or 1.0) * s.push_step * u / np.linalg.norm(u, axis=1).max()
                capped = False
            x.positions += step
            _, f_new = self._forces(x, count)
            # an accurate mode where it is isolated (λ1 < 0); a loose one in a convex region, where
            # it sits in the cluster at the bottom of the spectrum and only its direction is used
            # (tightened with the forces: near the saddle the step along v needs v to ~1e-2 max|F|)
            f_max = float(np.linalg.norm(f_new, axis=1).max())
            tight = min(shifted.EIGEN_TOL, max(MIN_MODE_TOL, MODE_TOL_PER_FORCE * f_max))
            new_mode = self.lowest_mode(x, mode, count, tight if mode.eigenvalue < 0 else s.activation_mode_tol)
            if mode.eigenvalue >= 0 and new_mode.eigenvalue < 0:
                new_mode = self._dense_mode(x, new_mode.factor, new_mode.block, tight)
            if mode.eigenvalue < 0:
                new_mode = _tracked(new_mode, mode, x)
            model_error = _quadratic_model_error(mode, x, f, f_new, step) if mode.eigenvalue < 0 else 0.0
            if mode.eigenvalue < 0 <= new_mode.eigenvalue or model_error > POOR_MODEL:
                trust = max(0.5 * trust, s.min_trust)
            elif capped and new_mode.eigenvalue < 0 and model_error < GOOD_MODEL:
                trust = min(1.5 * trust, s.climb_step)
            f, mode = f_new, new_mode

    def _relax_perpendicular(self, atoms, direction, n_steps, count):
        """Steepest descent on F − (F·d)d, moves capped at ``max_move`` per atom. A step that
        raised the energy was too long for the stiffest perpendicular direction (α·k > 2: a
        period-2 oscillation that the cap holds at max |F| = max_move/α, seen in 4 096-atom
        a-Si searches that then ran to the step limit): the search's step factor α is halved."""
        e_before = None
        for _ in range(n_steps):
            e, f = self._forces(atoms, count)
            if e_before is not None and e > e_before:
                self._alpha = max(0.5 * self._alpha, self.s.perpendicular_alpha / 64)
            e_before = e
            f_perp = f - np.sum(f * direction) * direction
            step = self._alpha * f_perp
            longest = np.linalg.norm(step, axis=1).max()
            if longest > self.s.max_move:
                step *= self.s.max_move / longest
            atoms.positions += step

    # ---------------------------------------------------------------- search
    def search(self, minimum, seed: int = 0, atom: int | None = None, direction: np.ndarray | None = None) -> ArtnResult:
        """One search from the relaxed ``minimum``. ``atom`` (default: drawn with the seed from
        :func:`activation_candidates`, or from all atoms with ``activation = "random"``) is the
        centre of the activation; ``direction`` (N×3) replaces the random one (tests, scripted
        events). Collective over the group."""
        t0 = time.perf_counter()
        count = _Counter()
        self._alpha = self.s.perpendicular_alpha
        rng = np.random.default_rng(seed)
        if atom is None:
            pool = self.activation_pool(minimum)
            atom = int(pool[rng.integers(len(pool))])
        result = ArtnResult("failed", atom=atom, seed=seed)
        try:
            saddle = self._activate_and_converge(minimum, atom, rng, direction, count)
            self._confirm(minimum, saddle, result, count)
        except (ConvergenceError, HpcvibError) as exc:
            result.status, result.reason = "failed", str(exc)
        result.counts = count.as_dict()
        result.seconds = time.perf_counter() - t0
        self.log.info("search atom %d seed %d: %s%s (%d forces, %d modes, %.1f s)", atom, seed, result.status,
                      f" ({result.reason})" if result.reason else f", ΔE = {result.delta_E_eV:.4f} eV",
                      count.forces, count.modes, result.seconds)
        return result

    def activation_pool(self, minimum) -> np.ndarray:
        """The atoms the ``activation`` rule lets a search start from."""
        if self.s.activation not in ACTIVATION_RULES:
            raise HpcvibError(f"unknown activation rule {self.s.activation!r} (use {', '.join(ACTIVATION_RULES)})")
        return activation_candidates(minimum, self.pot) if self.s.activation == "defect" else np.arange(len(minimum))

    def _activate_and_converge(self, minimum, atom, rng, direction, count):
        """Activation pushes along d until λ1 < threshold, then convergence steps; when the
        negative mode is lost during convergence, back to activation (at most ``max_returns``)."""
        s = self.s
        d = activation_direction(minimum, atom, s.activation_radius, rng) if direction is None else \
            np.asarray(direction, dtype=float) / np.linalg.norm(direction)
        d_step = d / np.linalg.norm(d, axis=1).max()  # largest atom moves by one unit
        x = minimum.copy()
        x.calc = None
        x.positions += s.initial_displacement * d_step
        mode = last_unstable = None
        activating, returns = True, 0
        fresh = False  # mode belongs to the current x (no second eigensolve when the phase switches)
        while True:
            if activating:
                if count.activation_steps >= s.max_activation_steps:
                    raise ConvergenceError(f"no negative mode below {s.eigenvalue_threshold:g} eV/(Å² amu) within "
                                           f"{s.max_activation_steps} activation steps")
                count.activation_steps += 1
                if not fresh:
                    mode, fresh = self.lowest_mode(x, mode, count, s.activation_mode_tol), True
                if mode.eigenvalue < s.eigenvalue_threshold:
                    activating = False
                    if mode.factor is not None:  # converge from an accurate mode (same factor)
                        mode = self._dense_mode(x, mode.factor, mode.block, shifted.EIGEN_TOL)
                    continue
                x.positions += s.push_step * d_step
                self._relax_perpendicular(x, d, s.perpendicular_steps_activation, count)
                fresh = False
                continue
            if count.convergence_steps >= s.max_convergence_steps:
                raise ConvergenceError(f"saddle not converged to {s.fmax:g} eV/Å in {s.max_convergence_steps} steps")
            count.convergence_steps += 1
            _, f = self._forces(x, count)
            fmax = float(np.linalg.norm(f, axis=1).max())
            if fmax < s.fmax:
                return x
            if not fresh:
                mode, fresh = self.lowest_mode(x, mode, count), True
            if mode.factor is not None and s.newton:
                # one factor per step gives the mode and the min-mode-following step
                converged, mode = self._rfo_converge(x, f, mode, count)
                if converged:
                    return x
                raise ConvergenceError(f"lost the negative mode: {s.max_convex_steps} convex steps in a row "
                                       f"(λ1 = {mode.eigenvalue:.3g})")
            if mode.eigenvalue >= 0:
                returns += 1
                if returns > s.max_returns:
                    raise ConvergenceError(f"lost the negative mode {returns} times (λ1 = {mode.eigenvalue:.3g})")
                # resume activation along the last unstable direction, uphill
                if last_unstable is not None:
                    d = -np.sign(np.sum(f * last_unstable) or 1.0) * last_unstable
                    d_step = d / np.linalg.norm(d, axis=1).max()
                activating = True
                continue
            u = last_unstable = mode.direction
            fresh = False
            if s.newton and fmax < s.newton_force and mode.second_eigenvalue > 0:
                self._eigenvector_following_step(x, f, u, mode.curvature, count)
                continue
            f_par = float(np.sum(f * u))
            move = np.clip(f_par / mode.curvature, -s.climb_step, s.climb_step)
            x.positions += move * u
            self._relax_perpendicular(x, u, s.perpendicular_steps, count)

    def _eigenvector_following_step(self, x, f, u, curv, count):
        """Eigenvector-following step: uphill along the lowest mode u, Newton downhill in every
        other direction — Δx = H⁻¹F, plus −2 (u·F)/κ u when the curvature κ = uᵀHu along u is
        positive (H − 2κ u uᵀ has u's curvature reversed; for κ < 0 the Newton step already
        climbs along u). Quadratic convergence near the saddle. One factorisation of H with atom 0
        pinned (removing the translations; :func:`~hpcvib.landscape.saddle.newton_direction`); steps
        capped at ``climb_step`` Å per atom."""
        from hpcvib.landscape.saddle import newton_direction

        count.hessians += 1
        count.newton_steps += 1
        step = newton_direction(self.pot, x, f, self.comm)
        if curv > 0:
            step -= 2.0 * float(np.sum(f * u)) / curv * u
        step -= step.mean(axis=0)
        longest = np.linalg.norm(step, axis=1).max()
        if longest > self.s.climb_step:
            step *= self.s.climb_step / longest
        x.positions += step

    def _confirm(self, minimum, saddle, result, count):
        from hpcvib.landscape.saddle import relax
        from hpcvib.physics.thermo import analyse_structure, ln_attack_frequency

        s = self.s
        # MUMPS LDLᵀ (a Cholesky attempt would only fail on a saddle); the unstable mode comes
        # with it (verified by inertia)
        sad = analyse_structure(self.comm, saddle, self.pot, "saddle", n_modes=1, want_vectors=True, solver="mumps")
        count.hessians += 1
        result.n_negative = sad.n_negative
        if sad.n_negative != 1:
            raise HpcvibError(f"converged to a stationary point with {sad.n_negative} negative eigenvalues")
        u = cartesian_direction(sad.lowest_vectors[:, 0], saddle)
        sides = []
        for sign in (1.0, -1.0):
            start = saddle.copy()
            start.positions += sign * s.push_off * u / np.linalg.norm(u, axis=1).max()
            sides.append(relax(start, self.pot, fmax=s.relax_fmax, refine=False, newton=True, comm=self.comm))
        back = [same_minimum(minimum, side, s.same_minimum_tol) for side in sides]
        if not any(back):
            raise HpcvibError("not connected: neither side of the saddle relaxes to the initial minimum")
        if all(back):
            raise HpcvibError("both sides of the saddle relax to the initial minimum")
        final = sides[1] if back[0] else sides[0]
        mini = analyse_structure(self.comm, minimum, self.pot, "minimum", expect="minimum")
        fin = analyse_structure(self.comm, final, self.pot, "final minimum")
        count.hessians += 2
        if fin.n_negative:
            raise HpcvibError(f"final minimum has {fin.n_negative} negative eigenvalues")
        result.status = "ok"
        result.saddle, result.final = saddle, final
        result.energies = {"minimum": mini.energy, "saddle": sad.energy, "final": fin.energy}
        result.delta_E_eV = sad.energy - mini.energy
        result.lambda_neg = float(sad.lowest_eigenvalues[0])
        result.ln_det_minimum, result.ln_abs_det_saddle, result.ln_det_final = \
            mini.ln_det_prime, sad.ln_det_prime, fin.ln_det_prime
        result.ln_nu_THz = ln_attack_frequency(mini.ln_det_prime, sad.ln_det_prime, result.lambda_neg)
        result.max_displacement_A = float(np.linalg.norm(displacement(minimum, saddle), axis=1).max())


def duplicate_events(events, energy_tol: float = 1e-3, displacement_tol: float = 0.02) -> dict:
    """{duplicate key: original key} among (key, ΔE, max displacement) of successful events from
    one minimum: same barrier within ``energy_tol`` eV and same displacement of the most
    displaced atom within ``displacement_tol`` Å (the paper's criterion); first one kept."""
    originals, dup = [], {}
    for key, de, disp in events:
        for okey, ode, odisp in originals:
            if abs(de - ode) < energy_tol and abs(disp - odisp) < displacement_tol:
                dup[key] = okey
                break
        else:
            originals.append((key, de, disp))
    return dup
