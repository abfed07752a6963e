"""Harmonic thermodynamics from exact pseudo-determinants (THEORY §4, paper Eq. 2, 19–25).

All entropies in k_B, frequencies in THz, energies in eV, λ in eV/(Å² amu).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .constants import HBAR_OMEGA_UNIT_EV, KB_EV_PER_K, NU0_THZ, NU_UNIT_THZ
from .errors import HpcvibError, InputError, NotAMinimumError
from .log import get_logger

N_ZERO_MODES_PERIODIC = 3


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
        return {0: "minimum", 1: "saddle"}.get(self.n_negative, "higher-order saddle")

    def to_dict(self) -> dict:
        return {"structure": self.label, "n_atoms": self.n_atoms, "energy_eV": self.energy,
                "max_force_eV_A": self.max_force, "kind": self.kind, "n_negative": self.n_negative,
                "ln_det_prime": self.ln_det_prime, "lowest_eigenvalues": self.lowest_eigenvalues.tolist(),
                "pinned_atom": self.pinned_atom, "factorisation": self.factorisation,
                "timings_s": self.timings}


def analyse_structure(comm, atoms, potential, label: str = "<structure>", n_modes: int = 0,
                      want_vectors: bool = False, ordering: str = "auto", expect: str | None = None,
                      hessian=None) -> StructureAnalysis:
    """Energy, exact ln det'(D), inertia and (optionally) the lowest modes of ``atoms``.

    ``expect`` = ``"minimum"`` or ``"saddle"`` turns a wrong inertia into
    :class:`NotAMinimumError` naming the negative eigenvalues. Collective over ``comm``.
    """
    from .hessian import assemble_hessian
    from .spectral import log_pseudo_determinant, lowest_modes

    log = get_logger("thermo")
    timings = {}
    t = time.perf_counter()
    ev = potential.evaluate(atoms)
    fmax = float(np.sqrt((ev.forces ** 2).sum(axis=1)).max())
    timings["energy"] = time.perf_counter() - t
    if fmax > 1e-3:
        log.warning("%s: max force %.3g eV/Å — not a stationary point; harmonic results refer to a "
                    "non-equilibrium configuration", label, fmax)
    t = time.perf_counter()
    dh = hessian or assemble_hessian(comm, atoms, potential)
    timings["hessian"] = time.perf_counter() - t
    t = time.perf_counter()
    pd = log_pseudo_determinant(dh, ordering=ordering)
    timings["factorisation"] = time.perf_counter() - t
    wanted = max(n_modes, pd.n_negative)  # the negative eigenvalues are always reported
    lowest, vectors = np.zeros(0), None
    if wanted > 0:
        t = time.perf_counter()
        modes = lowest_modes(dh, k=wanted, want_vectors=want_vectors)
        lowest, vectors = modes.eigenvalues, modes.vectors
        timings["modes"] = time.perf_counter() - t
    fac = pd.factorisation
    result = StructureAnalysis(label, len(atoms), ev.energy, fmax, pd.ln_det_prime, pd.n_negative,
                               lowest, vectors, pd.pinned_atom, timings,
                               {"solver": "mumps", "ordering": fac.ordering, "seconds": fac.seconds,
                                "memory_MB_max_rank": fac.memory_mb_max, "memory_MB_total": fac.memory_mb_total,
                                "ranks": comm.size})
    check_kind(result, expect)
    return result


def check_kind(result: StructureAnalysis, expect: str | None) -> None:
    """Raise NotAMinimumError when the inertia does not match ``expect``; a higher-order saddle
    (two or more negative eigenvalues) is always an error: harmonic TST has no use for it."""
    want = {"minimum": 0, "saddle": 1, None: None}[expect]
    if result.n_negative == want or (want is None and result.n_negative <= 1):
        return
    neg = result.lowest_eigenvalues[result.lowest_eigenvalues < 0]
    shown = ", ".join(f"{v:.6g}" for v in neg[:10])
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


def perfect_bcc_reference(atoms, source: str = "<structure>"):
    """The perfect bcc cell with the same (orthogonal) cell as the defect cell ``atoms``.

    Repetitions n_a = L_a / a along each axis with a from the volume per atom; rejected (with
    a request for ``--reference``) unless the cell is orthogonal and 2 n_x n_y n_z is within
    10 % of N."""
    from .structures import bcc_supercell

    cell = np.asarray(atoms.get_cell())
    if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-8:
        raise InputError(f"{source}: automatic bcc reference needs an orthogonal cell; give --reference")
    lengths = np.diag(cell)
    a_est = (2.0 * np.prod(lengths) / len(atoms)) ** (1.0 / 3.0)
    reps = np.rint(lengths / a_est).astype(int)
    a_axes = lengths / reps
    n_bulk = 2 * int(np.prod(reps))
    if np.ptp(a_axes) > 1e-6 * a_axes.mean() or abs(n_bulk - len(atoms)) > 0.1 * n_bulk:
        raise InputError(f"{source}: cell is not a bcc supercell of the same lattice; give --reference")
    symbols = set(atoms.get_chemical_symbols())
    if len(symbols) != 1:
        raise InputError(f"{source}: automatic bcc reference needs a single species; give --reference")
    ref = bcc_supercell(tuple(reps), float(a_axes[0]), symbols.pop())
    ref.set_masses(np.full(len(ref), atoms.get_masses()[0]))
    return ref
