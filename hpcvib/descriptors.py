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

from .errors import InputError
from .neighbours import CellList

#: LAMMPS ``compute sna/atom`` default: θ0 = rfac0 π r / r_cut.
RFAC0 = 0.99363
#: Default cut-offs per potential (THEORY §5): 5.0 Å for Fe, 3.77 Å for Si (the potential's).
DEFAULT_RCUT = {"Fe_mm": 5.0, "Si_sw": 3.77118, "Si_sw_vink": 3.77118}


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


# ------------------------------------------------------------------------------------------
# numba kernels
# ------------------------------------------------------------------------------------------
@nb.njit(cache=True, inline="always")
def _add_wigner(u_re, u_im, x, y, z, r, rcut, rfac0, weight, twojmax, idxu, sq, work_re, work_im):
    """u += weight · f_c(r) · U^j(a, b) for all layers j (work arrays hold one neighbour's U)."""
    theta0 = rfac0 * np.pi * r / rcut
    z0 = r / np.tan(theta0)
    r0inv = 1.0 / np.sqrt(r * r + z0 * z0)
    a_re, a_im = z0 * r0inv, -z * r0inv
    b_re, b_im = y * r0inv, -x * r0inv
    fc = weight * 0.5 * (np.cos(np.pi * r / rcut) + 1.0)
    work_re[0] = 1.0
    work_im[0] = 0.0
    u_re[0] += fc
    for tj in range(1, twojmax + 1):
        cur = idxu[tj]
        prev = idxu[tj - 1]
        n = tj + 1
        inv_tj = 1.0 / sq[tj]
        for mb in range(n):
            # ma = 0 (m = −j): U = sqrt(mb/tj)(−b*) U'[0][mb−1] + sqrt((tj−mb)/tj) a* U'[0][mb]
            vr = 0.0
            vi = 0.0
            if mb > 0:
                pr, pi = work_re[prev + mb - 1], work_im[prev + mb - 1]
                c = sq[mb] * inv_tj
                # (−b*) = (−b_re, +b_im)
                vr += c * (-b_re * pr - b_im * pi)
                vi += c * (-b_re * pi + b_im * pr)
            if mb < tj:
                pr, pi = work_re[prev + mb], work_im[prev + mb]
                c = sq[tj - mb] * inv_tj
                # a* = (a_re, −a_im)
                vr += c * (a_re * pr + a_im * pi)
                vi += c * (a_re * pi - a_im * pr)
            work_re[cur + mb] = vr
            work_im[cur + mb] = vi
        for ma in range(1, tj // 2 + 1):  # rows ma > j follow by symmetry (_fill_lower_half)
            inv = 1.0 / sq[ma]
            row_prev = prev + (ma - 1) * tj
            row = cur + ma * n
            for mb in range(n):
                # U = sqrt(1/ma)[sqrt(mb) a U'[ma−1][mb−1] + sqrt(tj−mb) b U'[ma−1][mb]]
                vr = 0.0
                vi = 0.0
                if mb > 0:
                    pr, pi = work_re[row_prev + mb - 1], work_im[row_prev + mb - 1]
                    c = sq[mb] * inv
                    vr += c * (a_re * pr - a_im * pi)
                    vi += c * (a_re * pi + a_im * pr)
                if mb < tj:
                    pr, pi = work_re[row_prev + mb], work_im[row_prev + mb]
                    c = sq[tj - mb] * inv
                    vr += c * (b_re * pr - b_im * pi)
                    vi += c * (b_re * pi + b_im * pr)
                work_re[row + mb] = vr
                work_im[row + mb] = vi
        for p in range(cur, cur + (tj // 2 + 1) * n):
            u_re[p] += fc * work_re[p]
            u_im[p] += fc * work_im[p]


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
def _bispectrum_component(u_re, u_im, idxu, tj1, tj2, tj, cg, off):
    """B_{j1 j2 j} = Σ_{m m'} Re[(u^j_{m m'})* Z_{m m'}] with
    Z_{m m'} = Σ_{m1 m1'} C^{jm}_{j1m1 j2(m−m1)} C^{jm'}_{j1m1' j2(m'−m1')} u^{j1}_{m1 m1'} u^{j2}_{m−m1, m'−m1'}.

    u and Z both satisfy X_{−m,−m'} = (−1)^{m−m'} X*_{m,m'}, so the terms at (m, m') and
    (−m, −m') have equal real parts: half of the (m, m') plane is summed with weight 2 (the
    centre m = m' = 0 of an integer-j layer once)."""
    n, n1, n2 = tj + 1, tj1 + 1, tj2 + 1
    shift = (tj1 + tj2 - tj) // 2  # ma2 = ma − ma1 + shift
    u0, u1, u2 = idxu[tj], idxu[tj1], idxu[tj2]
    total = 0.0
    for ma in range((tj + 2) // 2):
        middle = 2 * ma == tj
        for mb in range(n):
            if middle and 2 * mb > tj:
                break
            weight = 1.0 if (middle and 2 * mb == tj) else 2.0
            zr = 0.0
            zi = 0.0
            for ma1 in range(n1):
                ma2 = ma - ma1 + shift
                if ma2 < 0 or ma2 >= n2:
                    continue
                ca = cg[off + ma * n1 + ma1]
                if ca == 0.0:
                    continue
                for mb1 in range(n1):
                    mb2 = mb - mb1 + shift
                    if mb2 < 0 or mb2 >= n2:
                        continue
                    c = ca * cg[off + mb * n1 + mb1]
                    p1 = u1 + ma1 * n1 + mb1
                    p2 = u2 + ma2 * n2 + mb2
                    zr += c * (u_re[p1] * u_re[p2] - u_im[p1] * u_im[p2])
                    zi += c * (u_re[p1] * u_im[p2] + u_im[p1] * u_re[p2])
            p = u0 + ma * n + mb
            total += weight * (u_re[p] * zr + u_im[p] * zi)
    return total


@nb.njit(cache=True, parallel=True)
def _descriptors(centres, indptr, vec, dist, index, weights, rcut, rfac0, twojmax, idxu, sq,
                 comps, cg_offset, cg):
    ncen = len(centres)
    ncomp = comps.shape[0]
    nu = idxu[twojmax + 1]
    out = np.zeros((ncen, ncomp))
    for c in nb.prange(ncen):
        u_re = np.zeros(nu)
        u_im = np.zeros(nu)
        work_re = np.zeros(nu)
        work_im = np.zeros(nu)
        # self term U^j(0) = identity, weight 1
        for tj in range(twojmax + 1):
            for ma in range(tj + 1):
                u_re[idxu[tj] + ma * (tj + 1) + ma] = 1.0
        for e in range(indptr[c], indptr[c + 1]):
            r = dist[e]
            if r < rcut:
                _add_wigner(u_re, u_im, vec[e, 0], vec[e, 1], vec[e, 2], r, rcut, rfac0,
                            weights[index[e]], twojmax, idxu, sq, work_re, work_im)
        _fill_lower_half(u_re, u_im, twojmax, idxu)
        for k in range(ncomp):
            out[c, k] = _bispectrum_component(u_re, u_im, idxu, comps[k, 0], comps[k, 1], comps[k, 2],
                                              cg, cg_offset[k])
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
    idxu, comps, cg_offset, cg, sq = _tables(twojmax, settings.full)
    cl = cell_list or CellList(atoms.get_positions(), np.asarray(atoms.get_cell()), settings.rcut)
    nl = cl.query(centres)
    symbols = atoms.get_chemical_symbols()
    weights = np.array([(settings.weights or {}).get(s, 1.0) for s in symbols], dtype=float)
    return _descriptors(nl.centres, nl.indptr, nl.vector_e3, nl.distance, nl.index, weights,
                        float(settings.rcut), float(settings.rfac0), twojmax, idxu, sq, comps, cg_offset, cg)


@dataclass
class DescriptorSums:
    """Per-configuration sums (Eq. 16): D = Σ_i D^i (K) and DD = Σ_i D^i D^iᵀ (K × K)."""

    D: np.ndarray
    DD: np.ndarray
    n_atoms: int
    per_atom: np.ndarray | None = None


def descriptor_sums(comm, atoms, settings: DescriptorSettings, keep_per_atom: bool = False) -> DescriptorSums:
    """D and DD of ``atoms``, each rank computing the atoms it owns (spatial blocks), reduced
    with allreduce so every rank holds the sums. ``keep_per_atom`` gathers D^i (N × K, atom
    order) on every rank."""
    from mpi4py import MPI

    from .partition import spatial_partition
    from .parallel import collective_call

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

    from .log import get_logger

    log = get_logger("descriptors")
    sizes = [len(a) for _, a in frames]
    split_frames = comm.size > 1 and len(frames) >= comm.size and max(sizes) < small_cell_atoms
    log.info("descriptors of %d structure(s) on %d rank(s): %s", len(frames), comm.size,
             "whole structures per rank" if split_frames else "atoms of each structure split over ranks")
    if not split_frames:
        return [descriptor_sums(comm, atoms, settings, keep_per_atom) for _, atoms in frames]
    mine = {}
    error = None
    for k in range(comm.rank, len(frames), comm.size):
        try:
            mine[k] = descriptor_sums(MPI.COMM_SELF, frames[k][1], settings, keep_per_atom)
        except Exception as exc:  # noqa: BLE001 — raised on every rank below
            error = exc
            break
    for exc in comm.allgather(error):
        if exc is not None:
            raise exc
    out = {}
    for part in comm.allgather(mine):
        out.update(part)
    return [out[k] for k in range(len(frames))]


def write_descriptors(path: str, frames, results, settings: DescriptorSettings) -> None:
    """Write per-atom descriptors, D, DD and the component table (atomically, by suffix)."""
    from .fileio import atomic_output

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
