"""Embedded-atom method (EAM) from LAMMPS setfl files (``eam/alloy`` and ``eam/fs``).

E = Σ_i F_{s(i)}(ρ_i) + ½ Σ_i Σ_{j≠i} φ_{s(i)s(j)}(r_ij),   ρ_i = Σ_{j≠i} f_{s(j)→s(i)}(r_ij).

Tabulated functions are interpolated exactly as LAMMPS ``pair_style eam/*`` does (cubic Hermite
segments whose knot slopes come from a fourth-order finite-difference stencil; ``r φ(r)`` is
tabulated; F is extended linearly above ρ_max), so energies and forces agree with LAMMPS for the
same file. The Hessian is the exact second derivative of that interpolant (piecewise cubic:
second derivatives jump by O(Δr² f⁗) at the knots).
"""

from __future__ import annotations

import os

import numba as nb
import numpy as np

from hpcvib.errors import InputError
from hpcvib.potentials.base import Evaluation, Potential, add_block, radial_kernel


# ------------------------------------------------------------------------------------------
# file reading
# ------------------------------------------------------------------------------------------
def read_setfl(path: str, style: str | None = None):
    """Parse a DYNAMO setfl file. ``style`` is ``"alloy"``, ``"fs"`` or None (from the suffix,
    else from the number of values). Returns a dict of the tabulated functions."""
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read potential file ({exc.strerror})") from exc
    try:
        header = lines[3].split()
        nel = int(header[0])
        elements = header[1:1 + nel]
        if nel < 1 or len(elements) != nel:
            raise ValueError("line 4 must be 'Nelements Element1 Element2 ...'")
        grid = lines[4].split()
        nrho, drho, nr, dr, cut = int(grid[0]), float(grid[1]), int(grid[2]), float(grid[3]), float(grid[4])
        if nrho < 5 or nr < 5 or drho <= 0 or dr <= 0 or cut <= 0:
            raise ValueError("line 5 must be 'Nrho drho Nr dr cutoff' with positive values")
        tokens = " ".join(lines[5:]).split()
    except (IndexError, ValueError) as exc:
        raise InputError(f"{path}: malformed setfl header ({exc})") from exc

    per_elem_alloy = 4 + nrho + nr
    per_elem_fs = 4 + nrho + nel * nr
    npair = nel * (nel + 1) // 2 * nr
    if style is None:
        if path.endswith(".fs"):
            style = "fs"
        elif path.endswith((".alloy", ".setfl")):
            style = "alloy"
        elif len(tokens) >= nel * per_elem_fs + npair and nel > 1:
            style = "fs"
        else:
            style = "alloy"
    per_elem = per_elem_fs if style == "fs" else per_elem_alloy
    need = nel * per_elem + npair
    if len(tokens) < need:
        raise InputError(f"{path}: truncated setfl file ({len(tokens)} values after the header, "
                         f"{need} expected for eam/{style} with {nel} element(s), Nrho={nrho}, Nr={nr})")
    try:
        pos = 0
        masses, frho, rhor = [], [], []
        for _ in range(nel):
            masses.append(float(tokens[pos + 1]))
            pos += 4
            frho.append(np.array(tokens[pos:pos + nrho], dtype=float))
            pos += nrho
            nf = nel if style == "fs" else 1
            rhor.append([np.array(tokens[pos + k * nr:pos + (k + 1) * nr], dtype=float) for k in range(nf)])
            pos += nf * nr
        z2r = {}
        for i in range(nel):
            for j in range(i + 1):
                z2r[(i, j)] = np.array(tokens[pos:pos + nr], dtype=float)
                pos += nr
    except ValueError as exc:
        raise InputError(f"{path}: non-numeric value in setfl tables ({exc})") from exc
    for arr in frho + [a for r in rhor for a in r] + list(z2r.values()):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{path}: non-finite value in setfl tables")
    return dict(style=style, elements=elements, masses=masses, nrho=nrho, drho=drho, nr=nr, dr=dr,
                cut=cut, frho=frho, rhor=rhor, z2r=z2r, comment=" ".join(lines[0:3]).strip())


def lammps_spline(f: np.ndarray, delta: float) -> np.ndarray:
    """Coefficients (n, 7) of LAMMPS ``PairEAM::interpolate`` for values f on a uniform grid.

    Columns 3..6 give the value ((c3 p + c4) p + c5) p + c6, columns 0..2 its derivative
    (c0 p + c1) p + c2 with respect to the abscissa, p ∈ [0, 1] the position in the segment.
    """
    n = len(f)
    s = np.zeros((n, 7))
    s[:, 6] = f
    s[0, 5] = s[1, 6] - s[0, 6]
    s[1, 5] = 0.5 * (s[2, 6] - s[0, 6])
    s[n - 2, 5] = 0.5 * (s[n - 1, 6] - s[n - 3, 6])
    s[n - 1, 5] = s[n - 1, 6] - s[n - 2, 6]
    m = np.arange(2, n - 2)
    s[m, 5] = ((s[m - 2, 6] - s[m + 2, 6]) + 8.0 * (s[m + 1, 6] - s[m - 1, 6])) / 12.0
    m = np.arange(0, n - 1)
    s[m, 4] = 3.0 * (s[m + 1, 6] - s[m, 6]) - 2.0 * s[m, 5] - s[m + 1, 5]
    s[m, 3] = s[m, 5] + s[m + 1, 5] - 2.0 * (s[m + 1, 6] - s[m, 6])
    s[n - 1, 4] = 0.0
    s[n - 1, 3] = 0.0
    s[:, 2] = s[:, 5] / delta
    s[:, 1] = 2.0 * s[:, 4] / delta
    s[:, 0] = 3.0 * s[:, 3] / delta
    return s


class EAM(Potential):
    """EAM potential from a LAMMPS ``eam/alloy`` or ``eam/fs`` setfl file."""

    def __init__(self, path: str, style: str | None = None, name: str | None = None, citation: str = ""):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InputError(f"{path}: potential file not found")
        t = read_setfl(path, style)
        super().__init__(name=name or os.path.basename(path), species=list(t["elements"]),
                         cutoff=float(t["cut"]), source=os.path.abspath(path),
                         citation=citation or t["comment"],
                         masses=dict(zip(t["elements"], t["masses"])))
        self.style = t["style"]
        nel = len(self.species)
        self.nrho, self.drho, self.nr, self.dr = t["nrho"], t["drho"], t["nr"], t["dr"]
        self.rhomax = (self.nrho - 1) * self.drho
        self.frho_c = np.stack([lammps_spline(f, self.drho) for f in t["frho"]])
        # rhor_idx[i, j]: table of the density that an atom of species j creates at an atom of
        # species i. eam/fs lists, in element j's block, one function per receiving element i.
        tables, idx = [], np.zeros((nel, nel), dtype=np.int64)
        for j in range(nel):
            for k, f in enumerate(t["rhor"][j]):
                tables.append(lammps_spline(f, self.dr))
        for i in range(nel):
            for j in range(nel):
                idx[i, j] = j * nel + i if self.style == "fs" else j
        self.rhor_c = np.stack(tables)
        self.rhor_idx = idx
        z2, zidx = [], np.zeros((nel, nel), dtype=np.int64)
        for (i, j), f in t["z2r"].items():
            zidx[i, j] = zidx[j, i] = len(z2)
            z2.append(lammps_spline(f, self.dr))
        self.z2r_c = np.stack(z2)
        self.z2r_idx = zidx
        self._density_support = self._compute_density_support()
        self.lattice_constants = {}

    @property
    def coupling_radius(self) -> float:
        """Support of the density functions (Å): f(r), f'(r), f''(r) are exactly zero for r at
        or beyond it. F''(ρ_c) ∇ρ_c ⊗ ∇ρ_c couples only atoms closer than this to c, so the
        Hessian of e.g. Mendelev Fe (density support 4.2 Å, cut-off 5.3 Å) reaches 8.4 Å,
        not 10.6 Å — 40 % fewer blocks and a much sparser factor, with identical values."""
        return self._density_support

    def _compute_density_support(self) -> float:
        rows = np.flatnonzero(np.any(self.rhor_c != 0.0, axis=(0, 2)))
        if len(rows) == 0:
            return 0.0
        k_end = rows[-1] + 1  # interval k covers [k dr, (k+1) dr); all later ones vanish
        if k_end >= self.nr - 1:  # the last interval is extended beyond the last knot
            return self.cutoff
        return min(self.cutoff, k_end * self.dr)

    def parameters(self) -> dict:
        return {"name": self.name, "style": f"eam/{self.style}", "species": self.species,
                "cutoff": self.cutoff, "file": self.source}

    def _tables(self):
        return (self.frho_c, self.rhor_c, self.rhor_idx, self.z2r_c, self.z2r_idx,
                1.0 / self.drho, 1.0 / self.dr, self.nrho, self.nr, self.rhomax)

    def evaluate(self, atoms) -> Evaluation:
        species = self.species_index(atoms)
        nl = self.energy_neighbours(atoms)
        e_i, forces, virial = _eam_energy_forces(nl.indptr, nl.index, nl.vector_e3, nl.distance,
                                                 species, *self._tables())
        volume = abs(np.linalg.det(np.asarray(atoms.get_cell())))
        return Evaluation(float(e_i.sum()), forces, -virial / volume, e_i)

    def _accumulate_hessian(self, nl, species, row_slot, indptr, cols, blocks):
        _eam_hessian(nl.centres, nl.slot, nl.indptr, nl.index, nl.vector_e3, nl.distance, species,
                     row_slot, indptr, cols, blocks, self.shared_radius, *self._tables())


# ------------------------------------------------------------------------------------------
# numba kernels
# ------------------------------------------------------------------------------------------
@nb.njit(cache=True, inline="always")
def _spline(c, x, rdx, n):
    """(value, first, second derivative) of a LAMMPS spline at x ≥ 0 (p clipped to the last knot)."""
    p = x * rdx + 1.0
    m = int(p)
    m = max(1, min(m, n - 1))
    p -= m
    p = min(p, 1.0)
    k = m - 1
    v = ((c[k, 3] * p + c[k, 4]) * p + c[k, 5]) * p + c[k, 6]
    d1 = (c[k, 0] * p + c[k, 1]) * p + c[k, 2]
    d2 = (2.0 * c[k, 0] * p + c[k, 1]) * rdx
    return v, d1, d2


@nb.njit(cache=True, inline="always")
def _embed(frho_c, s, rho, rdrho, nrho, rhomax):
    """F, F', F'' of species s at density rho (linear extension above rhomax, as LAMMPS)."""
    f, f1, f2 = _spline(frho_c[s], rho, rdrho, nrho)
    if rho > rhomax:
        f += f1 * (rho - rhomax)
        f2 = 0.0
    return f, f1, f2


@nb.njit(cache=True, inline="always")
def _pair(z2r_c, idx, r, rdr, nr):
    """φ, φ', φ'' from the tabulated r φ(r)."""
    z, z1, z2 = _spline(z2r_c[idx], r, rdr, nr)
    inv = 1.0 / r
    phi = z * inv
    d1 = z1 * inv - phi * inv
    d2 = z2 * inv - 2.0 * d1 * inv
    return phi, d1, d2


@nb.njit(cache=True)
def _densities(indptr, index, dist, centres_species, species, rhor_c, rhor_idx, rdr, nr):
    n = len(indptr) - 1
    rho = np.zeros(n)
    for c in range(n):
        si = centres_species[c]
        acc = 0.0
        for e in range(indptr[c], indptr[c + 1]):
            v, _, _ = _spline(rhor_c[rhor_idx[si, species[index[e]]]], dist[e], rdr, nr)
            acc += v
        rho[c] = acc
    return rho


@nb.njit(cache=True)
def _eam_energy_forces(indptr, index, vec, dist, species, frho_c, rhor_c, rhor_idx, z2r_c, z2r_idx,
                       rdrho, rdr, nrho, nr, rhomax):
    n = len(indptr) - 1
    rho = _densities(indptr, index, dist, species, species, rhor_c, rhor_idx, rdr, nr)
    energies = np.zeros(n)
    fp = np.zeros(n)
    for i in range(n):
        f, f1, _ = _embed(frho_c, species[i], rho[i], rdrho, nrho, rhomax)
        energies[i] = f
        fp[i] = f1
    forces = np.zeros((n, 3))
    virial = np.zeros((3, 3))
    for i in range(n):
        si = species[i]
        for e in range(indptr[i], indptr[i + 1]):
            j = index[e]
            sj = species[j]
            r = dist[e]
            phi, dphi, _ = _pair(z2r_c, z2r_idx[si, sj], r, rdr, nr)
            energies[i] += 0.5 * phi
            _, dfi, _ = _spline(rhor_c[rhor_idx[si, sj]], r, rdr, nr)
            _, dfj, _ = _spline(rhor_c[rhor_idx[sj, si]], r, rdr, nr)
            dedr = dphi + fp[i] * dfi + fp[j] * dfj
            for x in range(3):
                forces[i, x] += dedr * vec[e, x] / r
                for y in range(3):
                    virial[x, y] -= 0.5 * dedr * vec[e, x] * vec[e, y] / r
    return energies, forces, virial


@nb.njit(cache=True)
def _eam_hessian(centres, slot, indptr, index, vec, dist, species, row_slot, hptr, cols, blocks,
                 shared_radius, frho_c, rhor_c, rhor_idx, z2r_c, z2r_idx, rdrho, rdr, nrho, nr, rhomax):
    """Scatter the Hessian contributions of every centre c into the owned rows.

    For centre c: F''(ρ_c) ∇ρ_c ⊗ ∇ρ_c over all pairs of atoms in {c} ∪ N(c), plus the radial
    second derivatives of φ (row c only: row j gets them from its own centre) and of the
    density F'(ρ_c) f(r_cj) (rows c and j). Neighbours at or beyond ``shared_radius`` (the
    density support) have ∇ρ_c = 0 exactly and are left out of the outer product.
    """
    ncen = len(centres)
    cspecies = np.empty(ncen, dtype=np.int64)
    for c in range(ncen):
        cspecies[c] = species[centres[c]]
    rho = _densities(indptr, index, dist, cspecies, species, rhor_c, rhor_idx, rdr, nr)
    maxdeg = 0
    for c in range(ncen):
        maxdeg = max(maxdeg, indptr[c + 1] - indptr[c])
    grad = np.zeros((maxdeg + 1, 3))
    atom = np.zeros(maxdeg + 1, dtype=np.int64)
    kmat = np.zeros((3, 3))
    kf = np.zeros((3, 3))
    column_position = np.zeros(len(row_slot), dtype=np.int64)
    for c in range(ncen):
        a_c = centres[c]
        sc = cspecies[c]
        _, fp, fpp = _embed(frho_c, sc, rho[c], rdrho, nrho, rhomax)
        deg = indptr[c + 1] - indptr[c]
        # gradients of ρ_c with respect to each atom in {c} ∪ N(c) (one slot per image; only
        # the first n_grad slots, the atoms inside the density support, are non-zero)
        atom[0] = a_c
        grad[0, :] = 0.0
        n_grad = 1
        for t in range(deg):
            e = indptr[c] + t
            j = index[e]
            r = dist[e]
            _, df, d2f = _spline(rhor_c[rhor_idx[sc, species[j]]], r, rdr, nr)
            if r < shared_radius:
                atom[n_grad] = j
                for x in range(3):
                    g = df * vec[e, x] / r
                    grad[n_grad, x] = g
                    grad[0, x] -= g
                n_grad += 1
            # density term of centre c: F'(ρ_c) ∂²f(r_cj) — rows c and j
            radial_kernel(vec[e], r, df, d2f, kf)
            add_block(blocks, row_slot, hptr, cols, a_c, a_c, kf, fp)
            add_block(blocks, row_slot, hptr, cols, a_c, j, kf, -fp)
            add_block(blocks, row_slot, hptr, cols, j, j, kf, fp)
            add_block(blocks, row_slot, hptr, cols, j, a_c, kf, -fp)
            # pair term φ, row c only
            if row_slot[a_c] >= 0:
                _, dphi, d2phi = _pair(z2r_c, z2r_idx[sc, species[j]], r, rdr, nr)
                radial_kernel(vec[e], r, dphi, d2phi, kmat)
                add_block(blocks, row_slot, hptr, cols, a_c, a_c, kmat, 1.0)
                add_block(blocks, row_slot, hptr, cols, a_c, j, kmat, -1.0)
        if fpp != 0.0:
            for s in range(n_grad):
                r_a = row_slot[atom[s]]
                if r_a < 0:
                    continue
                # block positions of row a by column atom (every atom[t] is one: they share c)
                for p in range(hptr[r_a], hptr[r_a + 1]):
                    column_position[cols[p]] = p
                for t in range(n_grad):
                    p = column_position[atom[t]]
                    for x in range(3):
                        g = fpp * grad[s, x]
                        for y in range(3):
                            blocks[p, x, y] += g * grad[t, y]
