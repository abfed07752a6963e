"""Exact local (per-atom) vibrational entropies: the site decomposition of Eq. 2 (paper Sec. II A–B,
Eq. 7–10), computed — the paper uses it to motivate a per-atom model but never evaluates it.

Definitions (classical harmonic, k_B units; D the mass-weighted Hessian, eV/(Å² amu))
---------------------------------------------------------------------------------------
Let D = Σ_k λ_k v_k v_kᵀ, the sum restricted to the 3N − 3 modes that are not the three
translations of a periodic cell (primes below). With e_iα the unit vector of atom i, direction α:

* projector weight  P_iα = Σ'_k (v_k)_iα²  = 1 − m_i / M_tot,   Σ_iα P_iα = 3N − 3;
* local logarithm   L_iα = ⟨e_iα| ln'|D| |e_iα⟩ = Σ'_k ln|λ_k| (v_k)_iα²,   Σ_iα L_iα = ln|det'(D)|;
* local entropy     S_i(T) = Σ_α [ (1 + ln(k_B T / ħc)) P_iα − ½ L_iα ],   ħc = 1 eV^½ … (the
  ``HBAR_OMEGA_UNIT_EV`` of Eq. 2), so Σ_i S_i = S_vib (Eq. 2) exactly.

The local formation entropy of a defect cell of N' atoms against the perfect crystal of N_b atoms
at the same strain takes, for every atom, the excess over the perfect crystal's per-atom value in
the temperature-independent convention of Eq. 20:

  ΔS_i = −½ Σ_α L_iα + ln det'(D_b) / (2 N_b) + 3 (1/N' − 1/N_b) ln(ħc / 1 eV),

whose sum over the N' atoms is S_f of Eq. 20 exactly (Eq. 19 adds 3(N'/N_b − 1)(1 + ln k_B T),
i.e. the uniform per-atom 3(1/N_b − 1/N')(1 + ln k_B T)). For a saddle, |λ| is used (the
unstable mode contributes ln|λ_neg| as in ln|det'|).

Two routes evaluate L_iα:

* :func:`dense_local_decomposition` — every eigenpair of D (LAPACK), exact, O(N³), cells up to a
  few thousand atoms;
* :func:`quadrature_local_decomposition` — for the atoms that matter (within a radius of the
  defect, :func:`atoms_within`): Gauss and Gauss–Radau quadrature from Lanczos started at
  e_iα on the sparse D with the translations projected out
  (:mod:`hpcvib.linalg.lanczos_quadrature`), a guaranteed bracket of each L_iα, stopped when the
  bracket bounds the error of S_i by ``tol`` (k_B). Memory O(N); each atom costs 3 × (steps)
  sparse products, steps ∝ √(λ_max/λ_min) ∝ the cell's edge. A saddle's negative eigenvalues are
  flipped first (D + 2|λ| v vᵀ: same ln|λ|). Atoms beyond the radius take the perfect crystal's
  value (ΔS_i = 0); the far-field remainder S_f − Σ_near ΔS_i is then checked against the exact
  S_f of the factorisation route (:func:`far_field_remainder`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcvib.constants import HBAR_OMEGA_UNIT_EV, KB_EV_PER_K
from hpcvib.errors import InputError

#: largest cell (atoms) for the dense route (the eigenvectors of D: 3N × 3N doubles)
DENSE_LOCAL_MAX_ATOMS = 4000
N_TRANSLATIONS = 3


#: far-field remainder S_f − Σ ΔS_i (k_B) above which a radius-limited decomposition is flagged
FAR_FIELD_TOL_KB = 1e-3
#: largest cell the ``auto`` route diagonalises (LAPACK eigh of 3N × 3N: ~1 min at 2 000 atoms)
AUTO_DENSE_MAX_ATOMS = 2000
LOCAL_ROUTES = ("auto", "dense", "quadrature")
#: default bound on the error of each S_i (k_B) of the quadrature route
DEFAULT_LOCAL_TOL = 1e-8
#: atoms per block of simultaneous Lanczos recurrences (3 columns each)
QUADRATURE_BLOCK_ATOMS = 32
#: the Gauss–Radau node: this fraction of the lowest non-translation |eigenvalue| (computed to a
#: residual far below it), so that it lies below the spectrum
LOWER_NODE_FRACTION = 0.9
#: residual (eV/(Å² amu)) of the lowest eigenvalues that place the lower node: |θ − λ| ≤ the
#: residual, far below the 10 % margin of LOWER_NODE_FRACTION (λ_min ≳ 1e-3 in 10⁵-atom cells)
NODE_MODE_TOL = 1e-6
#: residual of the eigenvectors of negative eigenvalues that are flipped (a saddle): an error ε in
#: v changes each L_i by O(|λ| ε), ε ≈ residual / gap, so 1e-9 keeps it below 1e-7
FLIP_MODE_TOL = 1e-9


@dataclass
class LocalDecomposition:
    """Per-atom sums over α of the projector weights and local logarithms (N-vectors).

    ``computed`` marks the atoms whose L_i was evaluated (all for the dense route); the others are
    far-field atoms, ΔS_i = 0 by assumption. ``error_bound`` bounds |error| of each S_i (k_B)."""

    projector: np.ndarray  # Σ_α P_iα
    log_diagonal: np.ndarray  # Σ_α L_iα (nan where not computed)
    ln_det_prime: float  # Σ'_k ln|λ_k|, for the sum checks (nan when not every atom is computed)
    computed: np.ndarray | None = None
    error_bound: np.ndarray | None = None
    route: str = "dense"
    evaluated_atoms: int | None = None  # quadratures run (one per symmetry orbit), quadrature route
    lanczos_steps: tuple | None = None  # (fewest, most) Lanczos steps of one start vector

    @property
    def all_computed(self) -> bool:
        return self.computed is None or bool(self.computed.all())

    def with_far_field(self, ln_det_bulk: float, n_bulk: int) -> "LocalDecomposition":
        """A copy whose far-field atoms carry the perfect crystal's L_i (ΔS_i = 0 in :meth:`formation`)."""
        if self.all_computed:
            return self
        n = len(self.projector)
        bulk = ln_det_bulk / n_bulk + 6.0 * (1.0 / n - 1.0 / n_bulk) * np.log(HBAR_OMEGA_UNIT_EV)
        log_diagonal = np.where(self.computed, self.log_diagonal, bulk)
        return LocalDecomposition(self.projector, log_diagonal, self.ln_det_prime, self.computed,
                                  self.error_bound, self.route, self.evaluated_atoms, self.lanczos_steps)

    def entropy(self, temperature: float) -> np.ndarray:
        """S_i(T) (k_B), summing to S_vib of Eq. 2."""
        if temperature <= 0:
            raise InputError(f"temperature must be positive (got {temperature} K)")
        if not self.all_computed:
            raise InputError("S_i of far-field atoms needs the perfect crystal (with_far_field)")
        return (1.0 + np.log(KB_EV_PER_K * temperature / HBAR_OMEGA_UNIT_EV)) * self.projector - 0.5 * self.log_diagonal

    def formation(self, ln_det_bulk: float, n_bulk: int) -> np.ndarray:
        """ΔS_i (k_B) in the Eq. 20 convention, summing to S_f (Eq. 20)."""
        n = len(self.projector)
        ds = (-0.5 * self.log_diagonal + 0.5 * ln_det_bulk / n_bulk
              + 3.0 * (1.0 / n - 1.0 / n_bulk) * np.log(HBAR_OMEGA_UNIT_EV))
        return ds if self.all_computed else np.where(self.computed, ds, 0.0)


def dense_local_decomposition(potential, atoms) -> LocalDecomposition:
    """Exact P and L per atom from every eigenpair of D (LAPACK ``eigh``); the three zero modes
    of the periodic cell are the three eigenvalues of smallest magnitude."""
    n = len(atoms)
    if n > DENSE_LOCAL_MAX_ATOMS:
        raise InputError(f"{n} atoms: the dense local decomposition is limited to {DENSE_LOCAL_MAX_ATOMS} atoms")
    masses = np.repeat(atoms.get_masses(), 3)
    h = potential.hessian(atoms).toarray()
    d = h / np.sqrt(np.outer(masses, masses))
    d = 0.5 * (d + d.T)
    w, v = np.linalg.eigh(d)
    keep = np.argsort(np.abs(w))[N_TRANSLATIONS:]
    weights = v[:, keep] ** 2  # (3N, 3N − 3)
    projector = weights.sum(axis=1).reshape(n, 3).sum(axis=1)
    log_diagonal = (weights @ np.log(np.abs(w[keep]))).reshape(n, 3).sum(axis=1)
    return LocalDecomposition(projector, log_diagonal, float(np.log(np.abs(w[keep])).sum()))


def atoms_within(atoms, centres: np.ndarray, radius: float | None) -> np.ndarray:
    """Indices of the atoms within ``radius`` (Å, minimum image) of any atom of ``centres``;
    every atom when ``radius`` is None or ``centres`` holds every atom."""
    from hpcvib.geometry.structures import minimum_image

    n = len(atoms)
    if radius is None or len(centres) == n:
        return np.arange(n)
    if radius < 0:
        raise InputError(f"local radius must be ≥ 0 Å (got {radius})")
    near = np.zeros(n, dtype=bool)
    cell = atoms.get_cell()
    for c in centres:
        near |= np.linalg.norm(minimum_image(atoms.positions - atoms.positions[c], cell), axis=1) <= radius
    return np.flatnonzero(near)


def quadrature_local_decomposition(dh, atoms, indices: np.ndarray, tol: float = DEFAULT_LOCAL_TOL,
                                   mode_route: str = "preconditioned",
                                   orbits: np.ndarray | None = None) -> LocalDecomposition:
    """L_i of the atoms ``indices`` by Lanczos Gauss / Gauss–Radau quadrature (module docstring),
    each S_i to within ``tol`` (k_B). Collective over ``dh.comm``: the atoms are split over the
    ranks, each holding D (gathered), and the results are gathered on every rank.

    ``orbits`` (each atom's orbit representative under the configuration's own symmetry
    operations, :func:`hpcvib.landscape.fingerprint.self_symmetry_orbits`, the same on every
    rank): L_i = tr (ln D)_ii is then computed once per orbit and copied to the other members
    (505 orbits for the 15 999 atoms of a relaxed vacancy cell)."""
    comm = dh.comm
    n = len(atoms)
    masses = atoms.get_masses()
    indices = np.asarray(indices, dtype=int)
    orbit = np.arange(n) if orbits is None else np.asarray(orbits, dtype=int)
    wanted = np.unique(orbit[indices])
    lower, matvec = _positive_operator(dh, mode_route)
    logs, bounds, steps = _quadrature_over_ranks(comm, matvec, n, masses, wanted, lower, tol)
    log_diagonal, error = np.full(n, np.nan), np.zeros(n)
    computed = np.zeros(n, dtype=bool)
    computed[indices] = True
    rep_log = dict(zip(wanted.tolist(), logs))
    rep_err = dict(zip(wanted.tolist(), bounds))
    log_diagonal[indices] = [rep_log[r] for r in orbit[indices]]
    error[indices] = [rep_err[r] for r in orbit[indices]]
    projector = 3.0 * (1.0 - masses / masses.sum())
    return LocalDecomposition(projector, log_diagonal, float("nan"), computed, error, "quadrature", int(len(wanted)),
                              (int(steps.min()), int(steps.max())) if len(steps) else None)


def _positive_operator(dh, mode_route: str):
    """(a, X ↦ D' X): the Gauss–Radau node below the spectrum of D' on the complement of the
    translations, and D' = D with its negative eigenvalues flipped (a saddle), D gathered on
    every rank. The lowest eigenpairs come from ``mode_route`` (default the factorisation-free
    generalised Davidson), converged to :data:`NODE_MODE_TOL`, and for a saddle again with
    vectors to :data:`FLIP_MODE_TOL`."""
    from hpcvib.linalg.lanczos_quadrature import sparse_block_operator
    from hpcvib.linalg.preconditioned import lowest_modes_auto

    k = N_TRANSLATIONS + 4
    _, modes = lowest_modes_auto(dh, k=k, route=mode_route, want_vectors=False, tol=NODE_MODE_TOL)
    if np.sum(modes.eigenvalues < -NODE_MODE_TOL) > 0:  # a saddle: its unstable vectors, accurately
        _, modes = lowest_modes_auto(dh, k=k, route=mode_route, want_vectors=True, tol=FLIP_MODE_TOL)
    # the translations are the three eigenvalues of smallest magnitude (zero up to round-off, of either sign)
    others = np.argsort(np.abs(modes.eigenvalues), kind="stable")[N_TRANSLATIONS:]
    moving = np.abs(modes.eigenvalues[others])
    negative = [(modes.eigenvalues[j], modes.vectors[:, j]) for j in others if modes.eigenvalues[j] < 0]
    if len(negative) == len(moving):
        raise InputError(f"{len(negative)} negative eigenvalues among the {len(moving)} lowest computed: "
                         "not a minimum or a low-index saddle")
    product = sparse_block_operator(dh.comm.bcast(dh.gather_scipy(mass_weighted=True), root=0))

    def matvec(x):
        y = product(x)
        for lam, v in negative:
            y += (2.0 * abs(lam)) * np.outer(v, v @ x)
        return y
    return LOWER_NODE_FRACTION * float(moving.min()), matvec


def _quadrature_over_ranks(comm, matvec, n, masses, atoms_wanted, lower, tol):
    """Σ_α L_iα, its error bound (k_B units of S_i) and the Lanczos steps of each of the atoms
    ``atoms_wanted``, split over the ranks in blocks of :data:`QUADRATURE_BLOCK_ATOMS`, gathered
    in the order of ``atoms_wanted``."""
    from hpcvib.linalg.lanczos_quadrature import log_quadratic_forms
    from hpcvib.linalg.preconditioned import translation_vectors

    deflate = translation_vectors(masses)
    # S_i error ≤ ½ Σ_α (half-width) ≤ ¾ × (bracket width): the width asked of each column
    width = 4.0 * tol / 3.0
    mine = np.array_split(atoms_wanted, comm.size)[comm.rank]
    logs, bounds, steps = [np.zeros(0)], [np.zeros(0)], [np.zeros(0, dtype=int)]
    for start in range(0, len(mine), QUADRATURE_BLOCK_ATOMS):
        block = mine[start:start + QUADRATURE_BLOCK_ATOMS]
        columns = np.zeros((3 * n, 3 * len(block)))
        for j, i in enumerate(block):
            columns[3 * i:3 * i + 3, 3 * j:3 * j + 3] = np.eye(3)
        res = log_quadratic_forms(matvec, columns, lower, width, deflate=deflate)
        logs.append(res.value.reshape(-1, 3).sum(axis=1))
        bounds.append(0.5 * res.half_width.reshape(-1, 3).sum(axis=1))
        steps.append(res.steps.reshape(-1, 3).max(axis=1))
    gathered = [np.concatenate(comm.allgather(np.concatenate(part))) for part in (logs, bounds, steps)]
    return tuple(gathered)


def far_field_remainder(ds: np.ndarray, s_f_eq20: float) -> float:
    """S_f (Eq. 20, exact from the factorisation) − Σ_i ΔS_i: what the far-field atoms, taken as
    perfect crystal, would have to carry (k_B)."""
    return float(s_f_eq20 - ds.sum())
