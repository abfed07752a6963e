"""Harmonic thermodynamics from exact pseudo-determinants (THEORY §4, paper Eq. 2, 19–25).

All entropies in k_B, frequencies in THz, energies in eV, λ in eV/(Å² amu).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from hpcvib.constants import HBAR_OMEGA_UNIT_EV, KB_EV_PER_K, NU0_THZ, NU_UNIT_THZ
from hpcvib.errors import HpcvibError, InputError, NotAMinimumError
from hpcvib.log import get_logger

N_ZERO_MODES_PERIODIC = 3
#: largest force (eV/Å) of a structure called a stationary point (``expect`` checks it)
STATIONARY_FORCE_TOL = 1e-3


# ------------------------------------------------------------------------------------------
# formulas
# ------------------------------------------------------------------------------------------
def vibrational_entropy(ln_det_prime: float, n_atoms: int, temperature: float) -> float:
    """Classical harmonic S_vib (k_B) of a periodic cell at T (K), Eq. 2:
    S = (3N − 3)(1 + ln(k_B T / ħc)) − ½ ln det'(D), ħc = 6.4654151e-2 eV."""
    if temperature <= 0:
        raise InputError(f"temperature must be positive (got {temperature} K)")
    n_modes = 3 * n_atoms - N_ZERO_MODES_PERIODIC
    return float(n_modes * (1.0 + np.log(KB_EV_PER_K * temperature / HBAR_OMEGA_UNIT_EV)) - 0.5 * ln_det_prime)


def formation_entropy(ln_det_defect: float, n_defect: int, ln_det_bulk: float, n_bulk: int,
                      temperature: float | None = None) -> tuple[float, str]:
    """Formation entropy S_f (k_B) of a defect cell of N' atoms against a perfect cell of N_b
    atoms at the same cell shape (Eq. 20, or Eq. 19 when ``temperature`` is given).

    Eq. 20: S_f = (N'/N_b) ½ ln det'(D_b) − ½ ln det'(D_d) + 3 (1 − N'/N_b) ln(ħc / 1 eV).
    Eq. 19 adds 3 (N'/N_b − 1)(1 + ln(k_B T / 1 eV)).
    Returns (S_f, convention) with convention ``"Eq20"`` or ``"Eq19(T=...K)"``.
    """
    ratio = n_defect / n_bulk
    s_f = ratio * 0.5 * ln_det_bulk - 0.5 * ln_det_defect + 3.0 * (1.0 - ratio) * np.log(HBAR_OMEGA_UNIT_EV)
    if temperature is None:
        return float(s_f), "Eq20"
    if temperature <= 0:
        raise InputError(f"temperature must be positive (got {temperature} K)")
    s_f += 3.0 * (ratio - 1.0) * (1.0 + np.log(KB_EV_PER_K * temperature))
    return float(s_f), f"Eq19(T={temperature:g}K)"


def formation_energy(energy_defect: float, n_defect: int, energy_bulk: float, n_bulk: int) -> float:
    """E_f (eV) of a defect cell of N' atoms against a perfect cell of N_b atoms at the same
    strain: E_f = E_d − (N'/N_b) E_b (the energy counterpart of Eq. 20)."""
    return float(energy_defect - n_defect / n_bulk * energy_bulk)


def ln_attack_frequency(ln_det_minimum: float, ln_abs_det_saddle: float, lambda_negative: float) -> float:
    """Vineyard ln(ν*/1 THz) (Eq. 24–25) from ln det'(D_m), ln|det'(D_s)| and the negative
    eigenvalue λ_neg of D_s (eV/(Å² amu)):
    ln ν* = ½ ln det'(D_m) − ½ (ln|det'(D_s)| − ln|λ_neg|) + ln(15.6333042)."""
    if lambda_negative >= 0:
        raise HpcvibError(f"saddle eigenvalue λ_neg = {lambda_negative:g} is not negative")
    return float(0.5 * ln_det_minimum - 0.5 * (ln_abs_det_saddle - np.log(abs(lambda_negative)))
                 + np.log(NU_UNIT_THZ / NU0_THZ))


def htst_rate(ln_nu_thz: float, barrier: float, temperature: float) -> float:
    """Harmonic TST rate (1/s), Eq. 23: R = ν* exp(−ΔE / k_B T), ν* in THz."""
    if temperature <= 0:
        raise InputError(f"temperature must be positive (got {temperature} K)")
    return float(np.exp(ln_nu_thz + np.log(1e12) - barrier / (KB_EV_PER_K * temperature)))


def frequencies_thz(eigenvalues: np.ndarray) -> np.ndarray:
    """ν = sign(λ) · sqrt(|λ|) · 15.6333042 THz (imaginary modes as negative frequencies)."""
    lam = np.asarray(eigenvalues, dtype=float)
    return np.sign(lam) * np.sqrt(np.abs(lam)) * NU_UNIT_THZ


def without_zero_modes(eigenvalues: np.ndarray, n_zero: int = N_ZERO_MODES_PERIODIC) -> np.ndarray:
    """The spectrum without its ``n_zero`` eigenvalues of smallest magnitude (the translations),
    ascending."""
    lam = np.asarray(eigenvalues, dtype=float)
    return np.sort(np.delete(lam, np.argsort(np.abs(lam))[:n_zero]))


def quantum_harmonic(eigenvalues: np.ndarray, temperature: float, n_zero: int = N_ZERO_MODES_PERIODIC):
    """Quantum harmonic free energy F (eV) and entropy S (k_B) from the *full* spectrum of D
    (the ``n_zero`` lowest |λ| are the translations and are left out; modes must be stable).

    F = Σ [ħω/2 + k_B T ln(1 − e^{−ħω/k_BT})],  S = Σ [x/(eˣ − 1) − ln(1 − e^{−x})], x = ħω/k_BT.
    """
    lam = without_zero_modes(eigenvalues, n_zero)
    if np.any(lam <= 0):
        raise HpcvibError("quantum harmonic thermodynamics needs a stable spectrum (minimum)")
    hw = HBAR_OMEGA_UNIT_EV * np.sqrt(lam)
    kt = KB_EV_PER_K * temperature
    x = hw / kt
    free = float(np.sum(0.5 * hw + kt * np.log(-np.expm1(-x))))
    entropy = float(np.sum(x / np.expm1(x) - np.log(-np.expm1(-x))))
    return free, entropy


def density_of_states(eigenvalues: np.ndarray, bins: int = 100, n_zero: int = N_ZERO_MODES_PERIODIC):
    """Histogram of vibrational frequencies (THz) without the translations: (edges, counts)."""
    nu = frequencies_thz(without_zero_modes(eigenvalues, n_zero))
    counts, edges = np.histogram(nu, bins=bins)
    return edges, counts


# ------------------------------------------------------------------------------------------
# analysis of one structure
# ------------------------------------------------------------------------------------------
@dataclass
class StructureAnalysis:
    """Exact harmonic data of one stationary point."""

    label: str
    n_atoms: int
    energy: float
    max_force: float
    ln_det_prime: float
    n_negative: int
    lowest_eigenvalues: np.ndarray
    lowest_vectors: np.ndarray | None
    pinned_atom: int
    timings: dict
    factorisation: dict

    @property
    def kind(self) -> str:
        from hpcvib.linalg.spectral import stationary_point_kind

        return stationary_point_kind(self.n_negative)

    def to_dict(self) -> dict:
        return {"structure": self.label, "n_atoms": self.n_atoms, "energy_eV": self.energy,
                "max_force_eV_A": self.max_force, "kind": self.kind, "n_negative": self.n_negative,
                "ln_det_prime": self.ln_det_prime, "lowest_eigenvalues": self.lowest_eigenvalues.tolist(),
                "pinned_atom": self.pinned_atom, "factorisation": self.factorisation,
                "timings_s": self.timings}


def analyse_structure(comm, atoms, potential, label: str = "<structure>", n_modes: int = 0,
                      want_vectors: bool = False, ordering: str = "auto", expect: str | None = None,
                      hessian=None, solver: str = "auto", force_tol: float = STATIONARY_FORCE_TOL) -> StructureAnalysis:
    """Energy, exact ln det'(D), inertia and (optionally) the lowest modes of ``atoms``.

    ``expect`` = ``"minimum"`` or ``"saddle"`` turns a largest force above ``force_tol`` (eV/Å;
    checked before any factorisation) or a wrong inertia into :class:`NotAMinimumError` naming
    the force or a few of the negative eigenvalues. Collective over ``comm``.
    ``solver``: see :func:`hpcvib.linalg.spectral.log_pseudo_determinant`; an expected saddle goes
    straight to MUMPS LDLᵀ (a Cholesky attempt would only fail).
    """
    from hpcvib.linalg.hessian import assemble_hessian
    from hpcvib.linalg.spectral import log_pseudo_determinant, lowest_modes

    log = get_logger("thermo")
    timings = {}
    t = time.perf_counter()
    ev = potential.evaluate(atoms)
    fmax = float(np.sqrt((ev.forces ** 2).sum(axis=1)).max())
    timings["energy"] = time.perf_counter() - t
    if expect is not None and fmax > force_tol:
        raise NotAMinimumError(f"{label}: expected a {'minimum' if expect == 'minimum' else 'first-order saddle'}, "
                               f"but the largest force is {fmax:.3g} eV/Å > {force_tol:g} eV/Å: not a stationary "
                               "point (relax it first, or raise --force-tol)")
    if fmax > force_tol:
        log.warning("%s: max force %.3g eV/Å — not a stationary point; harmonic results refer to a "
                    "non-equilibrium configuration", label, fmax)
    t = time.perf_counter()
    dh = hessian or assemble_hessian(comm, atoms, potential)
    timings["hessian"] = time.perf_counter() - t
    t = time.perf_counter()
    if expect == "saddle" and solver == "auto":  # CHOLMOD would fail on the negative pivot: skip it
        from hpcvib.linalg.solvers import mumps_seq

        solver = "mumps-metis" if comm.size == 1 and mumps_seq.available() else "mumps"
    pd = log_pseudo_determinant(dh, ordering=ordering, solver=solver)
    timings["factorisation"] = time.perf_counter() - t
    wanted = max(n_modes, pd.n_negative)  # the negative eigenvalues are always reported ...
    if _wrong_kind(pd.n_negative, expect):
        wanted = min(pd.n_negative, MODES_IN_REJECTION)  # ... but a rejection shows only a few of them
    lowest, vectors = np.zeros(0), None
    if wanted > 0:
        t = time.perf_counter()
        modes = lowest_modes(dh, k=wanted, want_vectors=want_vectors)
        lowest, vectors = modes.eigenvalues, modes.vectors
        timings["modes"] = time.perf_counter() - t
    fac = pd.factorisation
    result = StructureAnalysis(label, len(atoms), ev.energy, fmax, pd.ln_det_prime, pd.n_negative,
                               lowest, vectors, pd.pinned_atom, timings,
                               {"solver": fac.solver, "ordering": fac.ordering, "seconds": fac.seconds,
                                "memory_MB_max_rank": fac.memory_mb_max, "memory_MB_total": fac.memory_mb_total,
                                "estimated_mb": fac.info.get("estimated_mb"), "ranks": comm.size})
    check_kind(result, expect)
    return result


#: negative eigenvalues computed for the message when a structure is rejected (the inertia,
#: free from the factorisation, already proved it; computing all k costs ~k^2.7)
MODES_IN_REJECTION = 6


def _wrong_kind(n_negative: int, expect: str | None) -> bool:
    want = {"minimum": 0, "saddle": 1, None: None}[expect]
    return not (n_negative == want or (want is None and n_negative <= 1))


def check_kind(result: StructureAnalysis, expect: str | None) -> None:
    """Raise NotAMinimumError when the inertia does not match ``expect``; a higher-order saddle
    (two or more negative eigenvalues) is always an error: harmonic TST has no use for it."""
    want = {"minimum": 0, "saddle": 1, None: None}[expect]
    if not _wrong_kind(result.n_negative, expect):
        return
    neg = result.lowest_eigenvalues[result.lowest_eigenvalues < 0]
    shown = ", ".join(f"{v:.6g}" for v in neg[:10]) + (", …" if result.n_negative > len(neg[:10]) else "")
    what = {0: "expected a minimum", 1: "expected a first-order saddle",
            None: "a higher-order saddle is not a harmonic stationary state"}[want]
    raise NotAMinimumError(f"{result.label}: {what}, but D has {result.n_negative} negative "
                           f"eigenvalue(s){': ' + shown + ' eV/(Å² amu)' if shown else ''}")


def check_same_system(minimum, saddle, label_m: str, label_s: str) -> None:
    """A minimum and a saddle of one event must have the same atoms, species and cell."""
    if len(minimum) != len(saddle):
        raise InputError(f"{label_s}: {len(saddle)} atoms, but minimum {label_m} has {len(minimum)}")
    if minimum.get_chemical_symbols() != saddle.get_chemical_symbols():
        raise InputError(f"{label_s}: species differ from minimum {label_m}")
    if not np.allclose(np.asarray(minimum.get_cell()), np.asarray(saddle.get_cell()), atol=1e-6):
        raise InputError(f"{label_s}: cell differs from minimum {label_m}")


#: reciprocal lattice of each cubic host, in units of 2π/a: a point (h, k, l) of integers belongs
#: to it when h + k + l is even (bcc → fcc reciprocal lattice) or h, k, l have one parity (fcc → bcc)
def _reciprocal_lattice_point(lattice: str, hkl: np.ndarray) -> np.ndarray:
    if lattice == "bcc":
        return hkl.sum(axis=1) % 2 == 0
    parity = hkl % 2
    return (parity == parity[:, :1]).all(axis=1)


#: copies of each commensurate wave-vector class in the grid of the cube [0, 4π/a)³: the
#: reciprocal lattice points inside it (4 of the bcc host's fcc reciprocal, 2 of the fcc host's bcc)
BLOCH_MULTIPLICITY = {"bcc": 4, "fcc": 2}


def bloch_ln_det_prime(potential, atoms, lattice: str | None = None, reps=None, a: float | None = None,
                       q_chunk: int = 8192) -> tuple[float, float]:
    """Exact ln det'(D) of a perfect bcc or fcc supercell of ``reps`` = (n_x, n_y, n_z) cubic cells
    of side ``a`` (Å) by Bloch's theorem, in O(N) — no factorisation (THEORY §3).

    Every atom of a Bravais crystal is equivalent, so D is block-circulant and its 3N eigenvalues
    are those of the 3×3 Hermitian D(q) = (1/m) Σ_b H(0, b) e^{i q·d_b} at the N wave vectors
    commensurate with the supercell. H(0, b) is the exact Hessian row of atom 0 in the periodic
    cell itself (image contributions included; the phase is the same for every image because q
    is commensurate). The grid q = 2π/a (h/n_x, k/n_y, l/n_z), 0 ≤ h < 2n_x, … covers the cube
    [0, 4π/a)³, which holds each class modulo the reciprocal lattice m times (m = 4 for bcc, whose
    reciprocal lattice is fcc; m = 2 for fcc, whose reciprocal is bcc); the m copies of Γ carry the
    three zero modes and are left out: ln det'(D) = (1/m) Σ_{q ∉ Γ} ln det D(q).
    ``lattice``, ``reps`` and ``a`` default to those of the cell itself
    (:func:`hpcvib.geometry.structures.cubic_reference_parameters`).
    Returns (ln det'(D), smallest non-zero eigenvalue); a non-positive eigenvalue (mechanically
    unstable lattice) is an error.
    """
    from hpcvib.geometry.structures import cubic_reference_parameters, minimum_image

    if lattice is None or reps is None or a is None:
        lattice, reps, a = cubic_reference_parameters(atoms)
    reps = np.asarray(reps, dtype=np.int64)
    rows = potential.hessian_rows(atoms, np.array([0]))
    pos = atoms.get_positions()
    d = minimum_image(pos[rows.cols] - pos[0], atoms.get_cell())
    blocks = rows.blocks / atoms.get_masses()[0]
    grid = np.stack(np.meshgrid(*[np.arange(2 * n) for n in reps], indexing="ij"), axis=-1).reshape(-1, 3)
    whole = (grid % reps == 0).all(axis=1)
    gamma = whole & _reciprocal_lattice_point(lattice, grid // reps)
    q = 2.0 * np.pi / a * (grid[~gamma] / reps)
    total, lowest = 0.0, np.inf
    for start in range(0, len(q), q_chunk):
        phase = np.exp(1j * (d @ q[start:start + q_chunk].T))
        dq = np.einsum("bxy,bq->qxy", blocks, phase)
        w = np.linalg.eigvalsh(dq)
        lowest = min(lowest, float(w.min()))
        if lowest <= 0.0:
            raise HpcvibError(f"perfect {lattice} lattice (a = {a:.6f} Å) is mechanically unstable: "
                              f"D(q) has eigenvalue {lowest:.6g} eV/(Å² amu)")
        total += float(np.log(w).sum())
    return total / BLOCH_MULTIPLICITY[lattice], lowest


def analyse_perfect_crystal(potential, atoms, label: str = "auto reference") -> StructureAnalysis:
    """:class:`StructureAnalysis` of the perfect bcc or fcc supercell ``atoms`` with ln det'(D)
    from :func:`bloch_ln_det_prime` (no factorisation; a minimum by construction, checked: every
    D(q) positive definite)."""
    t = time.perf_counter()
    ev = potential.evaluate(atoms)
    fmax = float(np.sqrt((ev.forces ** 2).sum(axis=1)).max())
    t_energy = time.perf_counter() - t
    t = time.perf_counter()
    ln_det, lowest = bloch_ln_det_prime(potential, atoms)
    t_bloch = time.perf_counter() - t
    get_logger("thermo").info("%s: ln det'(D) = %.12f by Bloch sums over %d q-points (%.2f s)",
                              label, ln_det, len(atoms), t_bloch)
    return StructureAnalysis(label, len(atoms), ev.energy, fmax, ln_det, 0, np.array([lowest]), None, -1,
                             {"energy": t_energy, "bloch": t_bloch},
                             {"solver": "bloch", "q_points": len(atoms), "seconds": t_bloch})


def perfect_cubic_reference(atoms, source: str = "<structure>"):
    """The perfect bcc or fcc cell with the same (orthogonal) cell as the defect cell ``atoms``
    (host lattice, repetitions and lattice parameter by
    :func:`hpcvib.geometry.structures.cubic_reference_parameters`), with the defect cell's
    species and mass; a cell with more than one species needs an explicit reference."""
    from hpcvib.geometry.structures import cubic_reference_parameters, cubic_supercell

    lattice, reps, a = cubic_reference_parameters(atoms, source)
    symbols = set(atoms.get_chemical_symbols())
    if len(symbols) != 1:
        raise InputError(f"{source}: automatic crystal reference needs a single species; give --reference")
    ref = cubic_supercell(lattice, reps, a, symbols.pop())
    ref.set_masses(np.full(len(ref), atoms.get_masses()[0]))
    return ref
