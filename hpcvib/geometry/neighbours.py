"""O(N) periodic neighbour lists (cell lists) in numba, correct for cells of any shape and size.

A list is *full* (each pair appears from both sides) and stores one entry per periodic image, so
a cell smaller than twice the cut-off — where an atom meets several images of a neighbour, or
images of itself — is handled exactly. Arrays carry their axes in their names
(``vector_e3``: one 3-vector per entry).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np


@dataclass
class NeighbourList:
    """Neighbours within ``cutoff`` of a set of centre atoms.

    Attributes
    ----------
    cutoff : Å.
    centres : global indices of the atoms whose lists were built (sorted).
    slot : for every atom of the structure, its row in this list, or -1.
    indptr : entries of centre ``c`` are ``indptr[c]:indptr[c+1]``.
    index : global index of the neighbour of each entry.
    vector_e3 : r_j + T - r_i for each entry (the image vector), Å.
    distance : |vector_e3|, Å.
    """

    cutoff: float
    centres: np.ndarray
    slot: np.ndarray
    indptr: np.ndarray
    index: np.ndarray
    vector_e3: np.ndarray
    distance: np.ndarray

    @property
    def n_entries(self) -> int:
        return int(self.indptr[-1])

    def neighbours_of(self, atom: int) -> np.ndarray:
        """Global indices (one per image) of the neighbours of ``atom``."""
        s = self.slot[atom]
        if s < 0:
            raise KeyError(f"atom {atom} is not a centre of this list")
        return self.index[self.indptr[s]:self.indptr[s + 1]]


class CellList:
    """Atoms binned into a grid of cells at least ``cutoff`` wide (in plane spacing).

    Built once per structure in O(N); :meth:`query` returns lists for any subset of centres, so
    a rank can build the lists of the atoms it owns and of its ghosts only.
    """

    def __init__(self, positions: np.ndarray, cell: np.ndarray, cutoff: float):
        cell = np.ascontiguousarray(cell, dtype=np.float64)
        self.cell = cell
        self.cutoff = float(cutoff)
        inv = np.linalg.inv(cell)
        frac = np.ascontiguousarray(positions, dtype=np.float64) @ inv
        frac -= np.floor(frac)
        frac[frac >= 1.0] -= 1.0
        self.frac = np.ascontiguousarray(frac)
        volume = abs(np.linalg.det(cell))
        # distance between opposite faces of the cell, along each lattice direction
        spacing = np.array([volume / np.linalg.norm(np.cross(cell[(a + 1) % 3], cell[(a + 2) % 3]))
                            for a in range(3)])
        ncell = np.maximum(1, np.floor(spacing / self.cutoff)).astype(np.int64)
        # guard against absurd grids for very sparse systems
        while np.prod(ncell) > max(8 * len(frac), 27):
            ncell = np.maximum(1, ncell // 2)
        self.ncell = ncell
        self.reach = np.ceil(self.cutoff * ncell / spacing - 1e-12).astype(np.int64)
        self.reach = np.maximum(self.reach, 1)
        self.cell_of_atom, self.cell_start, self.cell_atoms = _bin_atoms(self.frac, self.ncell)

    def query(self, centres: np.ndarray | None = None) -> NeighbourList:
        """Full neighbour lists of ``centres`` (global indices; all atoms when None)."""
        natoms = len(self.frac)
        if centres is None:
            centres = np.arange(natoms, dtype=np.int64)
        centres = np.unique(np.asarray(centres, dtype=np.int64))
        counts = _count_neighbours(centres, self.frac, self.cell, self.cutoff, self.ncell, self.reach,
                                   self.cell_of_atom, self.cell_start, self.cell_atoms)
        indptr = np.zeros(len(centres) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        index, vec, dist = _fill_neighbours(centres, indptr, self.frac, self.cell, self.cutoff,
                                            self.ncell, self.reach, self.cell_of_atom,
                                            self.cell_start, self.cell_atoms)
        slot = np.full(natoms, -1, dtype=np.int64)
        slot[centres] = np.arange(len(centres))
        return NeighbourList(self.cutoff, centres, slot, indptr, index, vec, dist)


def neighbour_list(atoms, cutoff: float, centres: np.ndarray | None = None) -> NeighbourList:
    """Full periodic neighbour list of an :class:`ase.Atoms` (or of some ``centres``)."""
    return CellList(atoms.get_positions(), np.asarray(atoms.get_cell()), cutoff).query(centres)


def closest_pair(atoms, cutoff: float):
    """(distance, i, j) of the closest pair of atoms (images included) if closer than ``cutoff``,
    else ``(inf, -1, -1)``."""
    nl = neighbour_list(atoms, cutoff)
    if nl.n_entries == 0:
        return np.inf, -1, -1
    e = int(np.argmin(nl.distance))
    i = int(np.searchsorted(nl.indptr, e, side="right") - 1)
    return float(nl.distance[e]), int(nl.centres[i]), int(nl.index[e])


@nb.njit(cache=True)
def _bin_atoms(frac, ncell):
    n = frac.shape[0]
    ntot = ncell[0] * ncell[1] * ncell[2]
    cell_of_atom = np.empty(n, dtype=np.int64)
    counts = np.zeros(ntot + 1, dtype=np.int64)
    for i in range(n):
        a = min(int(frac[i, 0] * ncell[0]), ncell[0] - 1)
        b = min(int(frac[i, 1] * ncell[1]), ncell[1] - 1)
        c = min(int(frac[i, 2] * ncell[2]), ncell[2] - 1)
        k = (a * ncell[1] + b) * ncell[2] + c
        cell_of_atom[i] = k
        counts[k + 1] += 1
    start = np.cumsum(counts)
    fill = start[:-1].copy()
    cell_atoms = np.empty(n, dtype=np.int64)
    for i in range(n):
        k = cell_of_atom[i]
        cell_atoms[fill[k]] = i
        fill[k] += 1
    return cell_of_atom, start, cell_atoms


@nb.njit(cache=True, inline="always")
def _floordiv_mod(x, n):
    q = x // n
    return q, x - q * n


@nb.njit(cache=True)
def _visit(i, frac, cell, cutoff, ncell, reach, cell_of_atom, cell_start, cell_atoms,
           out_index, out_vec, out_dist, offset, store):
    """Loop over all (cell, image) pairs around atom i; count or store the neighbours found."""
    k = cell_of_atom[i]
    ca = k // (ncell[1] * ncell[2])
    cb = (k // ncell[2]) % ncell[1]
    cc = k % ncell[2]
    rc2 = cutoff * cutoff
    found = 0
    for da in range(-reach[0], reach[0] + 1):
        sa, ta = _floordiv_mod(ca + da, ncell[0])
        for db in range(-reach[1], reach[1] + 1):
            sb, tb = _floordiv_mod(cb + db, ncell[1])
            for dc in range(-reach[2], reach[2] + 1):
                sc, tc = _floordiv_mod(cc + dc, ncell[2])
                t = (ta * ncell[1] + tb) * ncell[2] + tc
                for p in range(cell_start[t], cell_start[t + 1]):
                    j = cell_atoms[p]
                    if j == i and sa == 0 and sb == 0 and sc == 0:
                        continue
                    fa = frac[j, 0] + sa - frac[i, 0]
                    fb = frac[j, 1] + sb - frac[i, 1]
                    fc = frac[j, 2] + sc - frac[i, 2]
                    x = fa * cell[0, 0] + fb * cell[1, 0] + fc * cell[2, 0]
                    y = fa * cell[0, 1] + fb * cell[1, 1] + fc * cell[2, 1]
                    z = fa * cell[0, 2] + fb * cell[1, 2] + fc * cell[2, 2]
                    r2 = x * x + y * y + z * z
                    if r2 < rc2:
                        if store:
                            e = offset + found
                            out_index[e] = j
                            out_vec[e, 0] = x
                            out_vec[e, 1] = y
                            out_vec[e, 2] = z
                            out_dist[e] = np.sqrt(r2)
                        found += 1
    return found


@nb.njit(cache=True, parallel=True)
def _count_neighbours(centres, frac, cell, cutoff, ncell, reach, cell_of_atom, cell_start, cell_atoms):
    counts = np.empty(len(centres), dtype=np.int64)
    dummy_i = np.empty(0, dtype=np.int64)
    dummy_v = np.empty((0, 3))
    dummy_d = np.empty(0)
    for c in nb.prange(len(centres)):
        counts[c] = _visit(centres[c], frac, cell, cutoff, ncell, reach, cell_of_atom, cell_start,
                           cell_atoms, dummy_i, dummy_v, dummy_d, 0, False)
    return counts


@nb.njit(cache=True, parallel=True)
def _fill_neighbours(centres, indptr, frac, cell, cutoff, ncell, reach, cell_of_atom, cell_start,
                     cell_atoms):
    nnz = indptr[-1]
    index = np.empty(nnz, dtype=np.int64)
    vec = np.empty((nnz, 3))
    dist = np.empty(nnz)
    for c in nb.prange(len(centres)):
        _visit(centres[c], frac, cell, cutoff, ncell, reach, cell_of_atom, cell_start, cell_atoms,
               index, vec, dist, indptr[c], True)
    return index, vec, dist


class VerletList:
    """Full neighbour lists of all atoms, rebuilt only when needed (a *skin* list).

    The list is built once for ``cutoff + skin`` with each entry's periodic image stored as an
    integer lattice shift; :meth:`neighbours` recomputes the image vectors from the current
    positions and keeps the entries closer than ``cutoff``. It is rebuilt when the number of
    atoms, the species, the cell or the periodicity changed, or when an atom moved more than
    ``skin / 2`` (Å) since the build — then no pair can have entered the cut-off unseen.

    Entries of each centre are in a canonical order (neighbour index, then image shift), so the
    list, and every sum over it, is the same function of the positions whether the list was
    reused or built anew: a relaxation's results do not depend on when the list was rebuilt.
    """

    def __init__(self, cutoff: float, skin: float = 0.5):
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self._reference = None
        self.builds = 0

    def _valid(self, positions: np.ndarray, cell: np.ndarray) -> bool:
        ref = self._reference
        if ref is None or ref[0].shape != positions.shape or not np.array_equal(ref[1], cell):
            return False
        moved = np.sqrt(((positions - ref[0]) ** 2).sum(axis=1)).max() if len(positions) else 0.0
        return moved < 0.5 * self.skin

    def _build(self, positions: np.ndarray, cell: np.ndarray) -> None:
        nl = CellList(positions, cell, self.cutoff + self.skin).query(None)
        centre_of_entry = np.repeat(np.arange(len(positions)), np.diff(nl.indptr))
        lattice = nl.vector_e3 - (positions[nl.index] - positions[centre_of_entry])
        shift = np.rint(lattice @ np.linalg.inv(cell)).astype(np.int64)
        order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], nl.index, centre_of_entry))
        self._indptr = nl.indptr
        self._index = np.ascontiguousarray(nl.index[order])
        self._shift = np.ascontiguousarray(shift[order] @ cell)
        self._reference = (positions.copy(), cell.copy())
        self.builds += 1

    def neighbours(self, positions: np.ndarray, cell: np.ndarray) -> NeighbourList:
        """The full list within ``cutoff`` at these positions (Å) and cell (rows, Å)."""
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        cell = np.ascontiguousarray(cell, dtype=np.float64)
        if not self._valid(positions, cell):
            self._build(positions, cell)
        indptr, index, vec, dist = _within_cutoff(positions, self._indptr, self._index, self._shift,
                                                  self.cutoff)
        n = len(positions)
        return NeighbourList(self.cutoff, np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64),
                             indptr, index, vec, dist)


@nb.njit(cache=True)
def _within_cutoff(positions, indptr, index, shift, cutoff):
    """Entries of a skin list closer than ``cutoff`` at ``positions``, order kept."""
    n = len(indptr) - 1
    rc2 = cutoff * cutoff
    vec_all = np.empty((len(index), 3))
    keep = np.zeros(len(index), dtype=np.bool_)
    counts = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        for e in range(indptr[i], indptr[i + 1]):
            j = index[e]
            x = positions[j, 0] - positions[i, 0] + shift[e, 0]
            y = positions[j, 1] - positions[i, 1] + shift[e, 1]
            z = positions[j, 2] - positions[i, 2] + shift[e, 2]
            vec_all[e, 0] = x
            vec_all[e, 1] = y
            vec_all[e, 2] = z
            if x * x + y * y + z * z < rc2:
                keep[e] = True
                counts[i + 1] += 1
    out_ptr = np.cumsum(counts)
    m = out_ptr[-1]
    out_index = np.empty(m, dtype=np.int64)
    out_vec = np.empty((m, 3))
    out_dist = np.empty(m)
    p = 0
    for e in range(len(index)):
        if keep[e]:
            out_index[p] = index[e]
            out_vec[p, 0] = vec_all[e, 0]
            out_vec[p, 1] = vec_all[e, 1]
            out_vec[p, 2] = vec_all[e, 2]
            out_dist[p] = np.sqrt(vec_all[e, 0] ** 2 + vec_all[e, 1] ** 2 + vec_all[e, 2] ** 2)
            p += 1
    return out_ptr, out_index, out_vec, out_dist
