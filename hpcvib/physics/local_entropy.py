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

This module evaluates the definitions *exactly* from the dense eigen-decomposition of D (cells up
to a few thousand atoms); the decomposition of every atom costs one O(N³) diagonalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcvib.constants import HBAR_OMEGA_UNIT_EV, KB_EV_PER_K
from hpcvib.errors import InputError

#: largest cell (atoms) for the dense route (the eigenvectors of D: 3N × 3N doubles)
DENSE_LOCAL_MAX_ATOMS = 4000
N_TRANSLATIONS = 3


@dataclass
class LocalDecomposition:
    """Per-atom sums over α of the projector weights and local logarithms (N-vectors)."""

    projector: np.ndarray  # Σ_α P_iα
    log_diagonal: np.ndarray  # Σ_α L_iα
    ln_det_prime: float  # Σ'_k ln|λ_k|, for the sum checks

    def entropy(self, temperature: float) -> np.ndarray:
        """S_i(T) (k_B), summing to S_vib of Eq. 2."""
        if temperature <= 0:
            raise InputError(f"temperature must be positive (got {temperature} K)")
        return (1.0 + np.log(KB_EV_PER_K * temperature / HBAR_OMEGA_UNIT_EV)) * self.projector - 0.5 * self.log_diagonal

    def formation(self, ln_det_bulk: float, n_bulk: int) -> np.ndarray:
        """ΔS_i (k_B) in the Eq. 20 convention, summing to S_f (Eq. 20)."""
        n = len(self.projector)
        return (-0.5 * self.log_diagonal + 0.5 * ln_det_bulk / n_bulk
                + 3.0 * (1.0 / n - 1.0 / n_bulk) * np.log(HBAR_OMEGA_UNIT_EV))


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
