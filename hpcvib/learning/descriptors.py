"""bSO(4) bispectrum descriptors (THEORY §5; Bartók 2010/2013, Thompson 2015), numba kernels.

Neighbour density of atom i inside r_cut mapped to the 3-sphere: θ0 = rfac0 π r / r_cut,
Cayley–Klein parameters a = (z0 − i z)/r0, b = (y − i x)/r0 with z0 = r cot θ0, r0 = sqrt(r² + z0²).
Expansion u^j = U^j(0) + Σ_k f_c(r_ik) w_k U^j(a_k, b_k), f_c(r) = ½(cos(π r/r_cut) + 1), and

    B_{j1 j2 j} = Σ (u^j_{m m'})* C^{jm}_{j1 m1 j2 m2} C^{jm'}_{j1 m1' j2 m2'} u^{j1}_{m1 m1'} u^{j2}_{m2 m2'}.

U^j, the spin-j representation of the SU(2) element [[a, b], [−b*, a*]], is built from U^{j−½} by
coupling with spin ½ (two terms per element). Angular momenta are stored doubled (``tj = 2j``);
element (ma, mb) of a layer is m = ma − j, m' = mb − j. The default component set is the paper's:
j1 = j2, integer j ≤ min(2 j1, jmax) (35 components at jmax = 4); ``full=True`` gives LAMMPS
``compute sna/atom``'s list (j2 ≤ j1 ≤ j, 55 components at jmax = 4) in LAMMPS's order.

Per configuration: D = Σ_i D^i and DD = Σ_i D^i D^iᵀ (Eq. 16) — sums, so each rank computes its
atoms and the sums are reduced.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from math import factorial, sqrt

import numba as nb
import numpy as np

from hpcvib.errors import InputError
from hpcvib.geometry.neighbours import CellList

#: LAMMPS ``compute sna/atom`` default: θ0 = rfac0 π r / r_cut.
RFAC0 = 0.99363
#: Cut-off (Å) when neither --rcut nor a potential says (a potential states its own:
#: :attr:`hpcvib.potentials.Potential.descriptor_cutoff`, THEORY §5).
DEFAULT_DESCRIPTOR_CUTOFF = 5.0


# ------------------------------------------------------------------------------------------
# component lists and Clebsch–Gordan tables (computed once per jmax and cached)
# ------------------------------------------------------------------------------------------
def component_list(twojmax: int, full: bool = False) -> np.ndarray:
    """Triples (2j1, 2j2, 2j) of the descriptor components, shape (K, 3).

    Paper's diagonal set (default): j1 = j2 = 0, ½, …, jmax and integer j with 0 ≤ j ≤ min(2j1, jmax).
    Full set: LAMMPS order — 2j1 = 0..twojmax, 2j2 = 0..2j1, 2j = 2j1−2j2..min(twojmax, 2j1+2j2)
    in steps of 2, kept when j ≥ j1.
    """
    out = []
    if full:
        for j1 in range(twojmax + 1):
            for j2 in range(j1 + 1):
                for j in range(j1 - j2, min(twojmax, j1 + j2) + 1, 2):
                    if j >= j1:
                        out.append((j1, j2, j))
    else:
        for j1 in range(twojmax + 1):
            for j in range(0, min(2 * j1, twojmax) + 1, 2):
                out.append((j1, j1, j))
    return np.array(out, dtype=np.int64)


def clebsch_gordan(tj1: int, tm1: int, tj2: int, tm2: int, tj: int, tm: int) -> float:
    """⟨j1 m1 j2 m2 | j m⟩ (Condon–Shortley) by Racah's formula; arguments doubled."""
    if tm1 + tm2 != tm or abs(tm1) > tj1 or abs(tm2) > tj2 or abs(tm) > tj:
        return 0.0
    if tj < abs(tj1 - tj2) or tj > tj1 + tj2 or (tj1 + tj2 + tj) % 2:
        return 0.0
    if (tj1 + tm1) % 2 or (tj2 + tm2) % 2 or (tj + tm) % 2:
        return 0.0
    f = factorial
    a = (tj1 + tj2 - tj) // 2
    b = (tj1 - tj2 + tj) // 2
    c = (-tj1 + tj2 + tj) // 2
    d = (tj1 + tj2 + tj) // 2 + 1
    pre = Fraction((tj + 1) * f(a) * f(b) * f(c), f(d))
    pre *= Fraction(f((tj1 + tm1) // 2) * f((tj1 - tm1) // 2) * f((tj2 + tm2) // 2) * f((tj2 - tm2) // 2)
                    * f((tj + tm) // 2) * f((tj - tm) // 2))
    total = Fraction(0)
    for k in range(0, d + 1):
        den = [k, a - k, (tj1 - tm1) // 2 - k, (tj2 + tm2) // 2 - k,
               (tj - tj2 + tm1) // 2 + k, (tj - tj1 - tm2) // 2 + k]
        if min(den) < 0:
            continue
        prod = 1
        for v in den:
            prod *= f(v)
        total += Fraction((-1) ** k, prod)
    return float(total) * sqrt(float(pre)) if total else 0.0


@functools.lru_cache(maxsize=8)
def _tables(twojmax: int, full: bool):
    """Flat tables for the kernels: layer offsets of U, component triples, and for each triple
    the CG coefficients C[ma, ma1] = ⟨j1 m1, j2 m−m1 | j m⟩ (row-major, (2j+1)×(2j1+1))."""
    idxu = np.zeros(twojmax + 2, dtype=np.int64)
    for tj in range(twojmax + 1):
        idxu[tj + 1] = idxu[tj] + (tj + 1) ** 2
    comps = component_list(twojmax, full)
    cg_offset = np.zeros(len(comps) + 1, dtype=np.int64)
    blocks = []
    for k, (tj1, tj2, tj) in enumerate(comps):
        block = np.zeros((tj + 1, tj1 + 1))
        for ma in range(tj + 1):
            tm = 2 * ma - tj
            for ma1 in range(tj1 + 1):
                tm1 = 2 * ma1 - tj1
                block[ma, ma1] = clebsch_gordan(tj1, tm1, tj2, tm - tm1, tj, tm)
        blocks.append(block.ravel())
        cg_offset[k + 1] = cg_offset[k] + block.size
    cg = np.concatenate(blocks) if blocks else np.zeros(0)
    sqrt_int = np.sqrt(np.arange(twojmax + 2, dtype=float))
    return idxu, comps, cg_offset, cg, sqrt_int


@functools.lru_cache(maxsize=8)
def _contraction_plan(twojmax: int, full: bool):
    """The bispectrum contraction as flat lists, built once per (jmax, set) from the CG tables.

    B_{j1 j2 j} = Σ_slots w · Re[(u^j_{m m'})* Z_{m m'}] over half of the (m, m') plane (w = 2,
    or 1 at the centre of an integer-j layer: u and Z both satisfy X_{−m,−m'} = (−1)^{m−m'} X*),
    Z_{m m'} = Σ_terms c · u[p1] u[p2] with c = C^{jm}_{j1m1 j2m2} C^{jm'}_{j1m1' j2m2'} ≠ 0.
    When j1 = j2 (the paper's diagonal set) the terms (m1, m1') and (m2, m2') = (m − m1, m' − m1')
    are equal — CG symmetry gives (−1)^{2(j1+j2−j)} = 1 — so each unordered pair is listed once
    with its coefficient doubled: half the products.

    Returns (slot_ptr [K+1], slot_pos, slot_weight, term_ptr [slots+1], term_p1, term_p2, term_c).
    """
    idxu, comps, cg_offset, cg, _ = _tables(twojmax, full)
    slot_ptr, slot_pos, slot_weight = [0], [], []
    term_ptr, p1s, p2s, coefs = [0], [], [], []
    for k, (tj1, tj2, tj) in enumerate(comps):
        n, n1, n2 = tj + 1, tj1 + 1, tj2 + 1
        shift = (tj1 + tj2 - tj) // 2
        off = cg_offset[k]
        for ma in range((tj + 2) // 2):
            middle = 2 * ma == tj
            for mb in range(n):
                if middle and 2 * mb > tj:
                    break
                terms = {}
                for ma1 in range(n1):
                    ma2 = ma - ma1 + shift
                    if not 0 <= ma2 < n2 or cg[off + ma * n1 + ma1] == 0.0:
                        continue
                    for mb1 in range(n1):
                        mb2 = mb - mb1 + shift
                        if not 0 <= mb2 < n2:
                            continue
                        c = cg[off + ma * n1 + ma1] * cg[off + mb * n1 + mb1]
                        if c == 0.0:
                            continue
                        p1 = idxu[tj1] + ma1 * n1 + mb1
                        p2 = idxu[tj2] + ma2 * n2 + mb2
                        if tj1 == tj2 and p1 > p2:
                            continue  # listed as its partner (p2, p1), doubled below
                        if tj1 == tj2 and p1 < p2:
                            c *= 2.0
                        terms[(p1, p2)] = terms.get((p1, p2), 0.0) + c
                slot_pos.append(idxu[tj] + ma * n + mb)
                slot_weight.append(1.0 if (middle and 2 * mb == tj) else 2.0)
                for (p1, p2), c in terms.items():
                    p1s.append(p1)
                    p2s.append(p2)
                    coefs.append(c)
                term_ptr.append(len(p1s))
        slot_ptr.append(len(slot_pos))
    as_int = functools.partial(np.array, dtype=np.int64)
    return (as_int(slot_ptr), as_int(slot_pos), np.array(slot_weight), as_int(term_ptr),
            as_int(p1s), as_int(p2s), np.array(coefs))


# ------------------------------------------------------------------------------------------
# numba kernels
# ------------------------------------------------------------------------------------------
@nb.njit(cache=True, inline="always")
def _cayley_klein(x, y, z, r, rcut, rfac0, weight):
    """(a_re, a_im, b_re, b_im, weight · f_c(r)) of one neighbour at (x, y, z), r = |(x, y, z)|."""
    theta0 = rfac0 * np.pi * r / rcut
    z0 = r / np.tan(theta0)
    r0inv = 1.0 / np.sqrt(r * r + z0 * z0)
    fc = weight * 0.5 * (np.cos(np.pi * r / rcut) + 1.0)
    return z0 * r0inv, -z * r0inv, y * r0inv, -x * r0inv, fc


@nb.njit(cache=True, inline="always")
def _add_wigner(u_re, u_im, a_re, a_im, b_re, b_im, fc, nn, twojmax, idxu, sq, p_re, p_im, c_re, c_im):
    """u += Σ_k fc_k U^j(a_k, b_k) over the ``nn`` neighbours k, for all layers j.

    U^j from U^{j−½} by coupling with spin ½, for all neighbours at once: element e of a layer
    is row e[:, k] of the (element × neighbour) work arrays, so every inner loop runs over the
    neighbours with no branch (SIMD). Seeding layer 0 with fc_k makes every layer carry the
    factor (the recursion is linear). Rows m ≤ 0 only (the rest by symmetry, _fill_lower_half);
    the end columns mb = 0 and mb = 2j, which have one term, are peeled off.
      row ma = 0:  U[mb] = sqrt(mb/2j)(−b*) U'[mb−1] + sqrt((2j−mb)/2j) a* U'[mb]
      row ma > 0:  U[ma][mb] = sqrt(1/ma)[sqrt(mb) a U'[ma−1][mb−1] + sqrt(2j−mb) b U'[ma−1][mb]]
    (angular momenta doubled: 2j = tj, ma, mb = m + j, m' + j)."""
    total = 0.0
    for k in range(nn):
        p_re[0, k] = fc[k]
        p_im[0, k] = 0.0
        total += fc[k]
    u_re[0] += total
    for tj in range(1, twojmax + 1):
        n = tj + 1
        inv_tj = 1.0 / sq[tj]
        for k in range(nn):
            pr = p_re[0, k]
            pi = p_im[0, k]
            c_re[0, k] = a_re[k] * pr + a_im[k] * pi
            c_im[0, k] = a_re[k] * pi - a_im[k] * pr
        for mb in range(1, tj):
            c1 = sq[mb] * inv_tj
            c2 = sq[tj - mb] * inv_tj
            for k in range(nn):
                pr = p_re[mb - 1, k]
                pi = p_im[mb - 1, k]
                qr = p_re[mb, k]
                qi = p_im[mb, k]
                c_re[mb, k] = c1 * (-b_re[k] * pr - b_im[k] * pi) + c2 * (a_re[k] * qr + a_im[k] * qi)
                c_im[mb, k] = c1 * (-b_re[k] * pi + b_im[k] * pr) + c2 * (a_re[k] * qi - a_im[k] * qr)
        for k in range(nn):
            pr = p_re[tj - 1, k]
            pi = p_im[tj - 1, k]
            c_re[tj, k] = -b_re[k] * pr - b_im[k] * pi
            c_im[tj, k] = -b_re[k] * pi + b_im[k] * pr
        for ma in range(1, tj // 2 + 1):
            inv = 1.0 / sq[ma]
            rp = (ma - 1) * tj  # row ma − 1 of the previous layer (width tj)
            rc = ma * n
            c2 = sq[tj] * inv
            for k in range(nn):
                qr = p_re[rp, k]
                qi = p_im[rp, k]
                c_re[rc, k] = c2 * (b_re[k] * qr - b_im[k] * qi)
                c_im[rc, k] = c2 * (b_re[k] * qi + b_im[k] * qr)
            for mb in range(1, tj):
                c1 = sq[mb] * inv
                c2 = sq[tj - mb] * inv
                for k in range(nn):
                    pr = p_re[rp + mb - 1, k]
                    pi = p_im[rp + mb - 1, k]
                    qr = p_re[rp + mb, k]
                    qi = p_im[rp + mb, k]
                    c_re[rc + mb, k] = c1 * (a_re[k] * pr - a_im[k] * pi) + c2 * (b_re[k] * qr - b_im[k] * qi)
                    c_im[rc + mb, k] = c1 * (a_re[k] * pi + a_im[k] * pr) + c2 * (b_re[k] * qi + b_im[k] * qr)
            c1 = sq[tj] * inv
            for k in range(nn):
                pr = p_re[rp + tj - 1, k]
                pi = p_im[rp + tj - 1, k]
                c_re[rc + tj, k] = c1 * (a_re[k] * pr - a_im[k] * pi)
                c_im[rc + tj, k] = c1 * (a_re[k] * pi + a_im[k] * pr)
        base = idxu[tj]
        for e in range((tj // 2 + 1) * n):
            sr = 0.0
            si = 0.0
            for k in range(nn):
                sr += c_re[e, k]
                si += c_im[e, k]
            u_re[base + e] += sr
            u_im[base + e] += si
        p_re, c_re = c_re, p_re
        p_im, c_im = c_im, p_im


@nb.njit(cache=True, inline="always")
def _fill_lower_half(u_re, u_im, twojmax, idxu):
    """Rows ma > j of every layer from u_{−m,−m'} = (−1)^{m−m'} (u_{m,m'})*."""
    for tj in range(1, twojmax + 1):
        n = tj + 1
        base = idxu[tj]
        for ma in range(tj // 2 + 1, n):
            for mb in range(n):
                src = base + (tj - ma) * n + (tj - mb)
                sign = 1.0 if (ma - mb) % 2 == 0 else -1.0
                u_re[base + ma * n + mb] = sign * u_re[src]
                u_im[base + ma * n + mb] = -sign * u_im[src]


@nb.njit(cache=True, inline="always")
def _bispectrum(u_re, u_im, slot_ptr, slot_pos, slot_weight, term_ptr, term_p1, term_p2, term_c,
                out, row):
    """All components B_k of one atom from the flat contraction plan (:func:`_contraction_plan`)."""
    for k in range(len(slot_ptr) - 1):
        total = 0.0
        for s in range(slot_ptr[k], slot_ptr[k + 1]):
            zr = 0.0
            zi = 0.0
            for t in range(term_ptr[s], term_ptr[s + 1]):
                a = term_p1[t]
                b = term_p2[t]
                c = term_c[t]
                zr += c * (u_re[a] * u_re[b] - u_im[a] * u_im[b])
                zi += c * (u_re[a] * u_im[b] + u_im[a] * u_re[b])
            p = slot_pos[s]
            total += slot_weight[s] * (u_re[p] * zr + u_im[p] * zi)
        out[row, k] = total


@nb.njit(cache=True, parallel=True)
def _descriptors(centres, indptr, vec, dist, index, weights, rcut, rfac0, twojmax, idxu, sq,
                 n_threads, slot_ptr, slot_pos, slot_weight, term_ptr, term_p1, term_p2, term_c):
    """Per-atom bispectrum of the centres; atoms are dealt in contiguous chunks to the threads,
    each chunk with its own work arrays."""
    ncen = len(centres)
    ncomp = len(slot_ptr) - 1
    nu = idxu[twojmax + 1]
    out = np.zeros((ncen, ncomp))
    maxdeg = 1
    for c in range(ncen):
        maxdeg = max(maxdeg, indptr[c + 1] - indptr[c])
    n_elem = (twojmax // 2 + 1) * (twojmax + 1)  # half rows of the largest layer
    n_chunks = max(1, min(ncen, 8 * n_threads))
    for ch in nb.prange(n_chunks):
        u_re = np.zeros(nu)
        u_im = np.zeros(nu)
        p_re = np.zeros((n_elem, maxdeg))
        p_im = np.zeros((n_elem, maxdeg))
        c_re = np.zeros((n_elem, maxdeg))
        c_im = np.zeros((n_elem, maxdeg))
        a_re = np.zeros(maxdeg)
        a_im = np.zeros(maxdeg)
        b_re = np.zeros(maxdeg)
        b_im = np.zeros(maxdeg)
        fc = np.zeros(maxdeg)
        for c in range(ch * ncen // n_chunks, (ch + 1) * ncen // n_chunks):
            u_re[:] = 0.0
            u_im[:] = 0.0
            # self term U^j(0) = identity, weight 1
            for tj in range(twojmax + 1):
                for ma in range(tj + 1):
                    u_re[idxu[tj] + ma * (tj + 1) + ma] = 1.0
            nn = 0
            for e in range(indptr[c], indptr[c + 1]):
                r = dist[e]
                if r < rcut:
                    a_re[nn], a_im[nn], b_re[nn], b_im[nn], fc[nn] = _cayley_klein(
                        vec[e, 0], vec[e, 1], vec[e, 2], r, rcut, rfac0, weights[index[e]])
                    nn += 1
            if nn > 0:
                _add_wigner(u_re, u_im, a_re, a_im, b_re, b_im, fc, nn, twojmax, idxu, sq,
                            p_re, p_im, c_re, c_im)
            _fill_lower_half(u_re, u_im, twojmax, idxu)
            _bispectrum(u_re, u_im, slot_ptr, slot_pos, slot_weight, term_ptr, term_p1, term_p2,
                        term_c, out, c)
    return out


# ------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------
@dataclass
class DescriptorSettings:
    """What defines a descriptor: jmax, cut-off (Å), component set, rfac0, species weights."""

    jmax: float = 4.0
    rcut: float = 5.0
    full: bool = False
    rfac0: float = RFAC0
    weights: dict | None = None

    @property
    def twojmax(self) -> int:
        tj = 2 * self.jmax
        if abs(tj - round(tj)) > 1e-12 or tj < 0:
            raise InputError(f"jmax must be a non-negative multiple of 1/2 (got {self.jmax})")
        return int(round(tj))

    @property
    def components(self) -> np.ndarray:
        return component_list(self.twojmax, self.full)

    def as_dict(self) -> dict:
        return {"jmax": self.jmax, "rcut": self.rcut, "full": self.full, "rfac0": self.rfac0,
                "weights": self.weights or {}, "n_components": int(len(self.components))}


def per_atom_descriptors(atoms, settings: DescriptorSettings, centres: np.ndarray | None = None,
                         cell_list: CellList | None = None) -> np.ndarray:
    """Bispectrum D^i (len(centres) × K) of the given atoms (all when None)."""
    if settings.rcut <= 0:
        raise InputError(f"descriptor cut-off must be positive (got {settings.rcut})")
    twojmax = settings.twojmax
    idxu, _, _, _, sq = _tables(twojmax, settings.full)
    plan = _contraction_plan(twojmax, settings.full)
    cl = cell_list or CellList(atoms.get_positions(), np.asarray(atoms.get_cell()), settings.rcut)
    nl = cl.query(centres)
    symbols = atoms.get_chemical_symbols()
    weights = np.array([(settings.weights or {}).get(s, 1.0) for s in symbols], dtype=float)
    return _descriptors(nl.centres, nl.indptr, nl.vector_e3, nl.distance, nl.index, weights,
                        float(settings.rcut), float(settings.rfac0), twojmax, idxu, sq,
                        nb.get_num_threads(), *plan)


@dataclass
class DescriptorSums:
    """Per-configuration sums (Eq. 16): D = Σ_i D^i (K) and DD = Σ_i D^i D^iᵀ (K × K)."""

    D: np.ndarray
    DD: np.ndarray
    n_atoms: int
    per_atom: np.ndarray | None = None


def descriptor_excess(defect: DescriptorSums, bulk_D: np.ndarray, bulk_DD: np.ndarray, n_bulk: int) -> tuple:
    """(ΔD, ΔDD): the sums of a defect cell of N' atoms minus (N'/N_b) times those of the
    perfect cell of N_b atoms at the same strain (the features of Eq. 14 and 17, THEORY §6)."""
    ratio = defect.n_atoms / n_bulk
    return defect.D - ratio * np.asarray(bulk_D), defect.DD - ratio * np.asarray(bulk_DD)


def descriptor_sums(comm, atoms, settings: DescriptorSettings, keep_per_atom: bool = False) -> DescriptorSums:
    """D and DD of ``atoms``, each rank computing the atoms it owns (spatial blocks), reduced
    with allreduce so every rank holds the sums. ``keep_per_atom`` gathers D^i (N × K, atom
    order) on every rank."""
    from mpi4py import MPI

    from hpcvib.parallel import collective_call
    from hpcvib.parallel.partition import spatial_partition

    owner = spatial_partition(atoms.get_positions(), np.asarray(atoms.get_cell()), comm.size)
    mine = np.flatnonzero(owner == comm.rank)
    local = collective_call(comm, per_atom_descriptors, atoms, settings, mine)
    k = local.shape[1]
    D = np.empty(k)
    DD = np.empty((k, k))
    comm.Allreduce(local.sum(axis=0), D, op=MPI.SUM)
    comm.Allreduce(local.T @ local, DD, op=MPI.SUM)
    per_atom = None
    if keep_per_atom:
        parts = comm.allgather((mine, local))
        per_atom = np.zeros((len(atoms), k))
        for idx, block in parts:
            per_atom[idx] = block
    return DescriptorSums(D, DD, len(atoms), per_atom)


def compute_many(comm, frames, settings: DescriptorSettings, keep_per_atom: bool = False,
                 small_cell_atoms: int = 20000) -> list:
    """Descriptor sums of many (label, atoms) frames, on every rank.

    Strategy (logged): with at least as many frames as ranks and cells smaller than
    ``small_cell_atoms``, each rank takes whole frames (round robin, COMM_SELF) and results are
    exchanged; otherwise every frame is split by atoms over all ranks and its sums reduced.
    Results are identical either way (sums of the same per-atom values).
    """
    from mpi4py import MPI

    from hpcvib.log import get_logger

    log = get_logger("descriptors")
    sizes = [len(a) for _, a in frames]
    split_frames = comm.size > 1 and len(frames) >= comm.size and max(sizes) < small_cell_atoms
    log.info("descriptors of %d structure(s) on %d rank(s): %s", len(frames), comm.size,
             "whole structures per rank" if split_frames else "atoms of each structure split over ranks")
    if not split_frames:
        return [descriptor_sums(comm, atoms, settings, keep_per_atom) for _, atoms in frames]
    from hpcvib.parallel import collective_call

    def mine_only():
        return {k: descriptor_sums(MPI.COMM_SELF, frames[k][1], settings, keep_per_atom)
                for k in range(comm.rank, len(frames), comm.size)}

    mine = collective_call(comm, mine_only)
    out = {}
    for part in comm.allgather(mine):
        out.update(part)
    return [out[k] for k in range(len(frames))]


def write_descriptors(path: str, frames, results, settings: DescriptorSettings) -> None:
    """Write per-atom descriptors, D, DD and the component table (atomically, by suffix)."""
    from hpcvib.fileio import atomic_output

    comps = settings.components / 2.0  # (j1, j2, j) as numbers, half-integers allowed
    with atomic_output(path) as tmp:
        if path.endswith(".npz"):
            arrays = {"components_j1_j2_j": comps}
            for k, ((label, atoms), res) in enumerate(zip(frames, results)):
                arrays[f"s{k}_D"] = res.D
                arrays[f"s{k}_DD"] = res.DD
                if res.per_atom is not None:
                    arrays[f"s{k}_per_atom"] = res.per_atom
                arrays[f"s{k}_label"] = np.array(label)
            np.savez(tmp, **arrays)
            return
        import h5py

        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("components_j1_j2_j", data=comps)
            for key, value in settings.as_dict().items():
                fh.attrs[key] = str(value) if isinstance(value, dict) else value
            for k, ((label, atoms), res) in enumerate(zip(frames, results)):
                g = fh.create_group(f"structure_{k:06d}")
                g.attrs["label"] = label
                g.attrs["n_atoms"] = len(atoms)
                g.create_dataset("D", data=res.D)
                g.create_dataset("DD", data=res.DD)
                if res.per_atom is not None:
                    g.create_dataset("per_atom", data=res.per_atom)
