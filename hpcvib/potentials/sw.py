"""Stillinger–Weber potential (LAMMPS ``pair_style sw`` conventions and ``.sw`` files).

E = Σ_{i<j} φ2(r_ij) + Σ_i Σ_{j<k} φ3(r_ij, r_ik, θ_jik),
φ2(r) = A ε [B (σ/r)^p − (σ/r)^q] exp(σ/(r − aσ)),
φ3 = λ ε (cos θ_jik − cos θ0)² exp(γσ_ij/(r_ij − aσ_ij)) exp(γσ_ik/(r_ik − aσ_ik)).
Multi-element parameters follow LAMMPS: the two-body term and the radial factors of the
three-body term use the (i, j, j) entry, λε and cos θ0 the (i, j, k) entry.
"""

from __future__ import annotations

import itertools
import os

import numba as nb
import numpy as np

from hpcvib.errors import InputError
from hpcvib.potentials.base import Evaluation, Potential, add_block, radial_kernel

_FIELDS = ("epsilon", "sigma", "a", "lambda", "gamma", "costheta0", "A", "B", "p", "q", "tol")

#: Original Stillinger–Weber silicon (Phys. Rev. B 31, 5262 (1985)), LAMMPS metal units.
SI_ORIGINAL = dict(epsilon=2.1683, sigma=2.0951, a=1.80, **{"lambda": 21.0}, gamma=1.20,
                   costheta0=-1.0 / 3.0, A=7.049556277, B=0.6022245584, p=4.0, q=0.0, tol=0.0)
#: Vink et al., J. Non-Cryst. Solids 282, 248 (2001): λ = 31.5, ε = 1.64833 eV for a-Si.
SI_VINK = dict(SI_ORIGINAL, epsilon=1.64833, **{"lambda": 31.5})


def read_sw_file(path: str) -> dict:
    """Entries of a LAMMPS ``.sw`` file: {(e1, e2, e3): {field: value}}."""
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read potential file ({exc.strerror})") from exc
    words = []
    for line in text.splitlines():
        words.extend(line.split("#", 1)[0].split())
    if len(words) == 0 or len(words) % 14 != 0:
        raise InputError(f"{path}: malformed .sw file (entries have 14 fields: 3 elements and "
                         f"11 numbers; found {len(words)} words)")
    entries = {}
    for k in range(0, len(words), 14):
        key = tuple(words[k:k + 3])
        try:
            vals = [float(v) for v in words[k + 3:k + 14]]
        except ValueError as exc:
            raise InputError(f"{path}: non-numeric parameter in entry {' '.join(key)} ({exc})") from exc
        entries[key] = dict(zip(_FIELDS, vals))
    return entries


class StillingerWeber(Potential):
    """Stillinger–Weber potential with one parameter entry per element triplet."""

    def __init__(self, entries: dict, name: str, source: str = "", citation: str = "",
                 species: list | None = None):
        elements = species or sorted({e for key in entries for e in key})
        for key in itertools.product(elements, repeat=3):
            if key not in entries:
                raise InputError(f"{source or name}: no Stillinger–Weber entry for triplet {' '.join(key)}")
        for key, p in entries.items():
            if p["epsilon"] < 0 or p["sigma"] <= 0 or p["a"] <= 0:
                raise InputError(f"{source or name}: entry {' '.join(key)} needs epsilon ≥ 0, sigma > 0, a > 0")
        ns = len(elements)
        two = np.zeros((ns, ns, 8))     # eps, sigma, cut, A, B, p, q, sigma*gamma (from (i, j, j))
        three = np.zeros((ns, ns, ns, 2))  # lambda*eps, cos theta0 (from (i, j, k))
        for i, j in itertools.product(range(ns), repeat=2):
            p = entries[(elements[i], elements[j], elements[j])]
            two[i, j] = (p["epsilon"], p["sigma"], p["a"] * p["sigma"], p["A"], p["B"], p["p"], p["q"],
                         p["sigma"] * p["gamma"])
        for i, j, k in itertools.product(range(ns), repeat=3):
            p = entries[(elements[i], elements[j], elements[k])]
            three[i, j, k] = (p["lambda"] * p["epsilon"], p["costheta0"])
        super().__init__(name=name, species=list(elements), cutoff=float(two[:, :, 2].max()),
                         source=os.path.abspath(source) if source else "", citation=citation)
        self.entries = entries
        self.two = two
        self.three = three

    @classmethod
    def from_file(cls, path: str, name: str | None = None) -> "StillingerWeber":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InputError(f"{path}: potential file not found")
        return cls(read_sw_file(path), name or os.path.basename(path), source=path)

    @classmethod
    def silicon(cls, params: dict, name: str, citation: str) -> "StillingerWeber":
        return cls({("Si", "Si", "Si"): dict(params)}, name=name, citation=citation)

    def parameters(self) -> dict:
        return {"name": self.name, "style": "sw", "species": self.species,
                "entries": {" ".join(k): v for k, v in sorted(self.entries.items())}}

    def evaluate(self, atoms) -> Evaluation:
        species = self.species_index(atoms)
        nl = self.energy_neighbours(atoms)
        e_i, forces, virial = _sw_energy_forces(nl.indptr, nl.index, nl.vector_e3, nl.distance,
                                                species, self.two, self.three)
        volume = abs(np.linalg.det(np.asarray(atoms.get_cell())))
        return Evaluation(float(e_i.sum()), forces, -virial / volume, e_i)

    def _accumulate_hessian(self, nl, species, row_slot, indptr, cols, blocks):
        _sw_hessian(nl.centres, nl.indptr, nl.index, nl.vector_e3, nl.distance, species,
                    self.two, self.three, row_slot, indptr, cols, blocks)


# ------------------------------------------------------------------------------------------
# numba kernels
# ------------------------------------------------------------------------------------------
@nb.njit(cache=True, inline="always")
def _phi2(two_ij, r):
    """φ2, φ2', φ2'' at r (zero beyond aσ)."""
    eps, sig, cut, A, B, p, q = two_ij[0], two_ij[1], two_ij[2], two_ij[3], two_ij[4], two_ij[5], two_ij[6]
    if r >= cut:
        return 0.0, 0.0, 0.0
    x = sig / r
    xp = x ** p
    xq = x ** q
    P = B * xp - xq
    P1 = (-p * B * xp + q * xq) / r
    P2 = (p * (p + 1.0) * B * xp - q * (q + 1.0) * xq) / (r * r)
    inv = 1.0 / (r - cut)
    ex = np.exp(sig * inv)
    ex1 = -ex * sig * inv * inv
    ex2 = ex * (sig * sig * inv ** 4 + 2.0 * sig * inv ** 3)
    ae = A * eps
    return ae * P * ex, ae * (P1 * ex + P * ex1), ae * (P2 * ex + 2.0 * P1 * ex1 + P * ex2)


@nb.njit(cache=True, inline="always")
def _radial3(two_ij, r):
    """exp(γσ/(r − aσ)) and its first two derivatives (zero beyond aσ)."""
    cut, sg = two_ij[2], two_ij[7]
    if r >= cut:
        return 0.0, 0.0, 0.0
    inv = 1.0 / (r - cut)
    e = np.exp(sg * inv)
    return e, -e * sg * inv * inv, e * (sg * sg * inv ** 4 + 2.0 * sg * inv ** 3)


@nb.njit(cache=True)
def _triplet(d1, r1, d2, r2, le, c0, E1, E1p, E1pp, E2, E2p, E2pp, G1, G2, H11, H12, H22, want_hessian):
    """Energy, gradients (G1 = ∂h/∂d1, G2 = ∂h/∂d2) and Hessian blocks of the three-body term
    h(d1, d2) = λε (cos θ − cos θ0)² E1(|d1|) E2(|d2|)."""
    # unit vectors and ∂cosθ/∂d as stack tuples: no heap allocation per triplet
    u1 = (d1[0] / r1, d1[1] / r1, d1[2] / r1)
    u2 = (d2[0] / r2, d2[1] / r2, d2[2] / r2)
    c = u1[0] * u2[0] + u1[1] * u2[1] + u1[2] * u2[2]
    dc = c - c0
    Q = dc * dc
    Qc = 2.0 * dc
    h = le * Q * E1 * E2
    h_r1 = le * Q * E1p * E2
    h_r2 = le * Q * E1 * E2p
    h_c = le * Qc * E1 * E2
    w1 = ((u2[0] - c * u1[0]) / r1, (u2[1] - c * u1[1]) / r1, (u2[2] - c * u1[2]) / r1)
    w2 = ((u1[0] - c * u2[0]) / r2, (u1[1] - c * u2[1]) / r2, (u1[2] - c * u2[2]) / r2)
    for x in range(3):
        G1[x] = h_r1 * u1[x] + h_c * w1[x]
        G2[x] = h_r2 * u2[x] + h_c * w2[x]
    if not want_hessian:
        return h
    h_r1r1 = le * Q * E1pp * E2
    h_r2r2 = le * Q * E1 * E2pp
    h_r1r2 = le * Q * E1p * E2p
    h_cc = 2.0 * le * E1 * E2
    h_cr1 = le * Qc * E1p * E2
    h_cr2 = le * Qc * E1 * E2p
    for x in range(3):
        for y in range(3):
            dxy = 1.0 if x == y else 0.0
            c11 = (-u2[x] * u1[y] - u1[x] * u2[y] + 3.0 * c * u1[x] * u1[y] - c * dxy) / (r1 * r1)
            c22 = (-u1[x] * u2[y] - u2[x] * u1[y] + 3.0 * c * u2[x] * u2[y] - c * dxy) / (r2 * r2)
            c12 = (dxy - u2[x] * u2[y] - u1[x] * u1[y] + c * u1[x] * u2[y]) / (r1 * r2)
            H11[x, y] = (h_r1r1 * u1[x] * u1[y] + h_cr1 * (u1[x] * w1[y] + w1[x] * u1[y])
                         + h_cc * w1[x] * w1[y] + h_r1 * (dxy - u1[x] * u1[y]) / r1 + h_c * c11)
            H22[x, y] = (h_r2r2 * u2[x] * u2[y] + h_cr2 * (u2[x] * w2[y] + w2[x] * u2[y])
                         + h_cc * w2[x] * w2[y] + h_r2 * (dxy - u2[x] * u2[y]) / r2 + h_c * c22)
            H12[x, y] = (h_r1r2 * u1[x] * u2[y] + h_cr1 * u1[x] * w2[y] + h_cr2 * w1[x] * u2[y]
                         + h_cc * w1[x] * w2[y] + h_c * c12)
    return h


@nb.njit(cache=True)
def _sw_energy_forces(indptr, index, vec, dist, species, two, three):
    n = len(indptr) - 1
    energies = np.zeros(n)
    forces = np.zeros((n, 3))
    virial = np.zeros((3, 3))
    G1 = np.zeros(3)
    G2 = np.zeros(3)
    dummy = np.zeros((3, 3))
    for i in range(n):
        si = species[i]
        for e in range(indptr[i], indptr[i + 1]):
            j = index[e]
            r = dist[e]
            phi, dphi, _ = _phi2(two[si, species[j]], r)
            energies[i] += 0.5 * phi
            for x in range(3):
                forces[i, x] += dphi * vec[e, x] / r
                for y in range(3):
                    virial[x, y] -= 0.5 * dphi * vec[e, x] * vec[e, y] / r
        for e1 in range(indptr[i], indptr[i + 1]):
            j = index[e1]
            E1, E1p, E1pp = _radial3(two[si, species[j]], dist[e1])
            if E1 == 0.0:
                continue
            for e2 in range(e1 + 1, indptr[i + 1]):
                k = index[e2]
                E2, E2p, E2pp = _radial3(two[si, species[k]], dist[e2])
                if E2 == 0.0:
                    continue
                par = three[si, species[j], species[k]]
                h = _triplet(vec[e1], dist[e1], vec[e2], dist[e2], par[0], par[1],
                             E1, E1p, E1pp, E2, E2p, E2pp, G1, G2, dummy, dummy, dummy, False)
                energies[i] += h
                for x in range(3):
                    forces[j, x] -= G1[x]
                    forces[k, x] -= G2[x]
                    forces[i, x] += G1[x] + G2[x]
                    for y in range(3):
                        virial[x, y] -= G1[x] * vec[e1, y] + G2[x] * vec[e2, y]
    return energies, forces, 0.5 * (virial + virial.T)


@nb.njit(cache=True)
def _sw_hessian(centres, indptr, index, vec, dist, species, two, three, row_slot, hptr, cols, blocks):
    G1 = np.zeros(3)
    G2 = np.zeros(3)
    H11 = np.zeros((3, 3))
    H12 = np.zeros((3, 3))
    H22 = np.zeros((3, 3))
    M = np.zeros((3, 3))
    kmat = np.zeros((3, 3))
    for c in range(len(centres)):
        i = centres[c]
        si = species[i]
        if row_slot[i] >= 0:
            for e in range(indptr[c], indptr[c + 1]):
                j = index[e]
                _, d1, d2 = _phi2(two[si, species[j]], dist[e])
                radial_kernel(vec[e], dist[e], d1, d2, kmat)
                add_block(blocks, row_slot, hptr, cols, i, i, kmat, 1.0)
                add_block(blocks, row_slot, hptr, cols, i, j, kmat, -1.0)
        for e1 in range(indptr[c], indptr[c + 1]):
            j = index[e1]
            E1, E1p, E1pp = _radial3(two[si, species[j]], dist[e1])
            if E1 == 0.0:
                continue
            for e2 in range(e1 + 1, indptr[c + 1]):
                k = index[e2]
                if row_slot[i] < 0 and row_slot[j] < 0 and row_slot[k] < 0:
                    continue
                E2, E2p, E2pp = _radial3(two[si, species[k]], dist[e2])
                if E2 == 0.0:
                    continue
                par = three[si, species[j], species[k]]
                _triplet(vec[e1], dist[e1], vec[e2], dist[e2], par[0], par[1],
                         E1, E1p, E1pp, E2, E2p, E2pp, G1, G2, H11, H12, H22, True)
                add_block(blocks, row_slot, hptr, cols, j, j, H11, 1.0)
                add_block(blocks, row_slot, hptr, cols, j, k, H12, 1.0)
                add_block(blocks, row_slot, hptr, cols, k, k, H22, 1.0)
                M[:, :] = H12.T
                add_block(blocks, row_slot, hptr, cols, k, j, M, 1.0)
                M[:, :] = H11 + H12 + H12.T + H22
                add_block(blocks, row_slot, hptr, cols, i, i, M, 1.0)
                M[:, :] = H11 + H12.T
                add_block(blocks, row_slot, hptr, cols, i, j, M, -1.0)
                M[:, :] = H12 + H22
                add_block(blocks, row_slot, hptr, cols, i, k, M, -1.0)
                M[:, :] = H11 + H12
                add_block(blocks, row_slot, hptr, cols, j, i, M, -1.0)
                M[:, :] = H12.T + H22
                add_block(blocks, row_slot, hptr, cols, k, i, M, -1.0)
