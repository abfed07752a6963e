"""Common interface of the built-in potentials.

A potential gives energy, forces, stress and the analytic Hessian. The Hessian is produced as
*block rows*: the 3×3 blocks H_{a,b} (eV/Å²) of a chosen set of row atoms ``a``, each row holding
every atom ``b`` that interacts with ``a`` directly or through a shared interaction centre (for
EAM and Stillinger–Weber: ``b`` within the neighbour list of a neighbour of ``a``, THEORY §2;
for EAM only centres within the support of the density functions count, see
:attr:`Potential.coupling_radius`, so no stored block is identically zero). Rows of different ranks are
computed independently with the same arithmetic, so the assembled matrix does not depend on the
number of ranks.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numba as nb
import numpy as np

from hpcvib.errors import InputError
from hpcvib.geometry.neighbours import CellList, VerletList


@dataclass
class Evaluation:
    """Energy (eV), forces (eV/Å, N×3), stress (eV/Å³, 3×3, ASE sign convention), per-atom energies."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray
    energies: np.ndarray


@dataclass
class BlockRows:
    """Block-CSR rows of a Hessian: ``blocks[indptr[r]:indptr[r+1]]`` are the 3×3 blocks
    (eV/Å²) of row atom ``rows[r]`` against the (sorted) column atoms ``cols[...]``."""

    n_atoms: int
    rows: np.ndarray
    indptr: np.ndarray
    cols: np.ndarray
    blocks: np.ndarray

    @property
    def nnz_blocks(self) -> int:
        return int(self.indptr[-1])

    def to_scipy(self):
        """The rows as a scipy CSR matrix of shape (3N, 3N) (zero rows elsewhere)."""
        import scipy.sparse as sp

        row_of_block = np.repeat(self.rows, np.diff(self.indptr))
        ii = (3 * row_of_block[:, None, None] + np.arange(3)[None, :, None]).repeat(3, axis=2)
        jj = (3 * self.cols[:, None, None] + np.arange(3)[None, None, :]).repeat(3, axis=1)
        n = 3 * self.n_atoms
        return sp.csr_matrix((self.blocks.ravel(), (ii.ravel(), jj.ravel())), shape=(n, n))


@dataclass
class Potential:
    """Base of the built-in potentials (see :mod:`hpcvib.potentials.eam`, :mod:`.sw`)."""

    name: str
    species: list
    cutoff: float
    source: str = ""
    citation: str = ""
    masses: dict = field(default_factory=dict)

    # -- identification -------------------------------------------------------------------
    @property
    def sha256(self) -> str:
        """Hash of the potential file (or of the parameters of a built-in without a file)."""
        if self.source and os.path.isfile(self.source):
            with open(self.source, "rb") as fh:
                return hashlib.sha256(fh.read()).hexdigest()
        return hashlib.sha256(repr(self.parameters()).encode()).hexdigest()

    def parameters(self) -> dict:
        return {"name": self.name, "species": self.species, "cutoff": self.cutoff}

    @property
    def descriptor_cutoff(self) -> float:
        """Cut-off (Å) of the bispectrum descriptors this potential recommends (THEORY §5): set
        by the potential (built-ins: the paper's values), else its interaction cut-off."""
        return self.__dict__.get("_descriptor_cutoff") or self.cutoff

    @descriptor_cutoff.setter
    def descriptor_cutoff(self, value: float) -> None:
        self.__dict__["_descriptor_cutoff"] = float(value)

    def describe(self) -> str:
        return f"{self.name} ({', '.join(self.species)}; cutoff {self.cutoff:.4f} Å)"

    # -- species --------------------------------------------------------------------------
    def species_index(self, atoms, source: str = "<structure>") -> np.ndarray:
        """Index into :attr:`species` of every atom; :class:`InputError` if one is missing."""
        from ase.data import atomic_numbers

        numbers = atoms.numbers
        out = np.full(len(numbers), -1, dtype=np.int64)
        for k, s in enumerate(self.species):
            out[numbers == atomic_numbers.get(s, -1)] = k
        if np.any(out < 0):
            symbols = np.array(atoms.get_chemical_symbols())
            missing = sorted(set(symbols[out < 0]))
            raise InputError(f"{source}: species {', '.join(missing)} not in potential {self.name} "
                             f"(which has {', '.join(self.species)})")
        return out

    # -- evaluation -----------------------------------------------------------------------
    @property
    def coupling_radius(self) -> float:
        """Range (Å) of the many-body part: an interaction centre c couples two of its neighbours
        a and b only when both lie closer than this to c. The cut-off unless a potential knows
        better (EAM: the support of its density functions), so that the Hessian pattern holds no
        blocks that are exactly zero."""
        return self.cutoff

    @property
    def shared_radius(self) -> float:
        """:attr:`coupling_radius` as the kernels use it: ∞ when it is the whole cut-off (no
        neighbour of the list is excluded), so a distance equal to the cut-off is never cut."""
        radius = self.coupling_radius
        return radius if radius < self.cutoff else np.inf

    def cell_list(self, atoms) -> CellList:
        return CellList(atoms.get_positions(), np.asarray(atoms.get_cell()), self.cutoff)

    #: skin (Å) of the neighbour list that :meth:`energy_neighbours` reuses between calls
    VERLET_SKIN = 0.5

    def energy_neighbours(self, atoms):
        """Full neighbour list within the cut-off for an energy/force evaluation, from a skin
        list kept on this potential and rebuilt only when an atom moved more than half the skin
        (:class:`hpcvib.geometry.neighbours.VerletList`): a relaxation's force calls build it once every
        few steps instead of every call (1024-atom Fe: 3.5 ms instead of 12.5 ms per call)."""
        cache = self.__dict__.get("_verlet")
        if cache is None:
            cache = self.__dict__["_verlet"] = VerletList(self.cutoff, self.VERLET_SKIN)
        return cache.neighbours(atoms.get_positions(), np.asarray(atoms.get_cell()))

    def evaluate(self, atoms) -> Evaluation:  # pragma: no cover - abstract
        raise NotImplementedError

    def hessian_rows(self, atoms, rows: np.ndarray | None = None, cell_list: CellList | None = None) -> BlockRows:
        """Analytic Hessian blocks of the row atoms ``rows`` (all atoms when None), eV/Å².

        Only the interaction centres within one cut-off of the rows are visited (the rank's
        owned atoms and their ghosts), so the work is proportional to ``len(rows)``.
        """
        n = len(atoms)
        rows = np.arange(n, dtype=np.int64) if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
        cl = cell_list or self.cell_list(atoms)
        nl_rows = cl.query(rows)
        centres = np.unique(np.concatenate([rows, nl_rows.index]))
        nl = cl.query(centres)
        species = self.species_index(atoms)
        row_slot = np.full(n, -1, dtype=np.int64)
        row_slot[rows] = np.arange(len(rows))
        indptr, cols = block_pattern(rows, nl.slot, nl.indptr, nl.index, nl.distance, n, self.shared_radius)
        blocks = np.zeros((len(cols), 3, 3))
        self._accumulate_hessian(nl, species, row_slot, indptr, cols, blocks)
        return BlockRows(n, rows, indptr, cols, blocks)

    def _accumulate_hessian(self, nl, species, row_slot, indptr, cols, blocks):  # pragma: no cover
        raise NotImplementedError

    def hessian(self, atoms):
        """Full Hessian as scipy CSR (3N×3N, eV/Å²) — serial convenience."""
        return self.hessian_rows(atoms).to_scipy()


# ------------------------------------------------------------------------------------------
# numba helpers shared by the potentials
# ------------------------------------------------------------------------------------------
@nb.njit(cache=True)
def _pattern_row(a, slot, indptr, index, distance, shared_radius, marker, mark, out, p):
    """Visit the columns of row atom ``a`` (see :func:`block_pattern`); store them from out[p]
    when ``out`` is not empty; return the position after the last one."""
    sa = slot[a]
    if marker[a] != mark:
        marker[a] = mark
        if len(out):
            out[p] = a
        p += 1
    for e in range(indptr[sa], indptr[sa + 1]):
        c = index[e]
        if marker[c] != mark:  # pair terms: every neighbour within the cut-off
            marker[c] = mark
            if len(out):
                out[p] = c
            p += 1
        if distance[e] >= shared_radius:
            continue
        sc = slot[c]  # many-body terms through the shared centre c
        for f in range(indptr[sc], indptr[sc + 1]):
            b = index[f]
            if distance[f] < shared_radius and marker[b] != mark:
                marker[b] = mark
                if len(out):
                    out[p] = b
                p += 1
    return p


@nb.njit(cache=True)
def block_pattern(rows, slot, indptr, index, distance, n_atoms, shared_radius):
    """Exact block sparsity of the rows: b couples to a iff b = a, b is a neighbour of a (pair
    terms), or a and b are both closer than ``shared_radius`` to a common centre c (c = a, or a
    neighbour of a; many-body terms). Columns sorted per row."""
    marker = np.full(n_atoms, -1, dtype=np.int64)
    counts = np.zeros(len(rows) + 1, dtype=np.int64)
    empty = np.empty(0, dtype=np.int64)
    for r in range(len(rows)):
        counts[r + 1] = _pattern_row(rows[r], slot, indptr, index, distance, shared_radius,
                                     marker, r, empty, 0)
    out_ptr = np.cumsum(counts)
    cols = np.empty(out_ptr[-1], dtype=np.int64)
    marker[:] = -1
    for r in range(len(rows)):
        _pattern_row(rows[r], slot, indptr, index, distance, shared_radius, marker, r, cols,
                     out_ptr[r])
        cols[out_ptr[r]:out_ptr[r + 1]] = np.sort(cols[out_ptr[r]:out_ptr[r + 1]])
    return out_ptr, cols


@nb.njit(cache=True, inline="always")
def find_col(cols, lo, hi, b):
    """Position of column b in the sorted cols[lo:hi] (it must be there)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if cols[mid] < b:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(cache=True, inline="always")
def add_block(blocks, row_slot, indptr, cols, a, b, m, scale):
    """blocks[a, b] += scale * m (3×3) if row atom a is owned here."""
    r = row_slot[a]
    if r < 0:
        return
    p = find_col(cols, indptr[r], indptr[r + 1], b)
    for x in range(3):
        for y in range(3):
            blocks[p, x, y] += scale * m[x, y]


@nb.njit(cache=True, inline="always")
def radial_kernel(d, r, d1, d2, out):
    """Second derivative (3×3) of a radial function g(|d|) with respect to d:
    g'' u uᵀ + (g'/r)(I − u uᵀ)."""
    for x in range(3):
        for y in range(3):
            uu = d[x] * d[y] / (r * r)
            out[x, y] = d2 * uu + (d1 / r) * ((1.0 if x == y else 0.0) - uu)
