"""Distributed assembly of the Hessian H (eV/Å²) and dynamical matrix D = M^-1/2 H M^-1/2
(eV/(Å² amu)) as PETSc block matrices (block size 3), THEORY §2.

Atoms are partitioned over the ranks of ``comm`` by spatial blocks (:mod:`hpcvib.parallel.partition`).
PETSc needs contiguous row ranges, so the matrix uses a *PETSc atom order*: rank 0's atoms first
(in increasing atom index), then rank 1's, and so on; :attr:`AtomLayout.petsc_index` maps atom
index → PETSc index. Spectral quantities (determinants, inertia, eigenvalues) do not depend on
this permutation; exports (:meth:`DistributedHessian.gather_scipy`) use the original order.

Each rank computes the block rows of its own atoms, visiting only the interaction centres within
one cut-off of them (its ghosts); positions are replicated (3N doubles), the O(N · 400) blocks are
not. Rows are computed with the same arithmetic whatever the partition, so the matrix is
bit-for-bit independent of the number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcvib.linalg.petsc_env import log_event
from hpcvib.log import get_logger
from hpcvib.parallel import collective_call
from hpcvib.parallel.partition import spatial_partition
from hpcvib.potentials import BlockRows, Potential, load_potential


@dataclass
class AtomLayout:
    """Ownership of atoms by the ranks of ``comm``."""

    comm: object
    n_atoms: int
    owner: np.ndarray
    petsc_index: np.ndarray
    owned: np.ndarray
    start: int
    end: int

    @property
    def n_owned(self) -> int:
        return len(self.owned)


def distribute_atoms(comm, atoms) -> AtomLayout:
    """Spatial partition of ``atoms`` over ``comm`` and the PETSc atom order (no communication)."""
    n = len(atoms)
    owner = spatial_partition(atoms.get_positions(), np.asarray(atoms.get_cell()), comm.size)
    order = np.lexsort((np.arange(n), owner))  # by owner, then atom index
    petsc_index = np.empty(n, dtype=np.int64)
    petsc_index[order] = np.arange(n)
    counts = np.bincount(owner, minlength=comm.size)
    start = int(counts[:comm.rank].sum())
    owned = np.flatnonzero(owner == comm.rank)
    return AtomLayout(comm, n, owner, petsc_index, owned, start, start + len(owned))


@dataclass
class DistributedHessian:
    """The rank's block rows of H plus what is needed to build PETSc matrices from them."""

    layout: AtomLayout
    rows: BlockRows
    masses: np.ndarray
    potential_name: str

    @property
    def comm(self):
        return self.layout.comm

    @property
    def n_dof(self) -> int:
        return 3 * self.layout.n_atoms

    def _scaled_blocks(self, mass_weighted: bool) -> np.ndarray:
        if not mass_weighted:
            return self.rows.blocks
        inv = 1.0 / np.sqrt(self.masses)
        row_atom = np.repeat(self.rows.rows, np.diff(self.rows.indptr))
        return self.rows.blocks * (inv[row_atom] * inv[self.rows.cols])[:, None, None]

    def local_csr(self, mass_weighted: bool = True, upper: bool = False, exclude_atom: int | None = None):
        """Block CSR of the local rows in PETSc order: (indptr, block columns, blocks).

        ``upper`` keeps the upper triangle (SBAIJ); ``exclude_atom`` drops the three rows and
        columns of that atom (the principal submatrix D_(-k) of THEORY §3) and renumbers."""
        lay = self.layout
        rows, cols = self.rows.rows, self.rows.cols
        row_of_block = np.repeat(np.arange(len(rows)), np.diff(self.rows.indptr))
        vals = self._scaled_blocks(mass_weighted)
        pidx = lay.petsc_index
        start = lay.start
        if exclude_atom is not None:
            pk = pidx[exclude_atom]
            pidx = pidx - (pidx > pk)
            start = start - int(pk < lay.start)
            keep = (cols != exclude_atom) & (rows[row_of_block] != exclude_atom)
            kept_rows = rows != exclude_atom
            new_row = np.cumsum(kept_rows) - 1
            row_of_block, cols, vals = new_row[row_of_block[keep]], cols[keep], vals[keep]
            nrow = int(kept_rows.sum())
        else:
            nrow = len(rows)
        jcol = pidx[cols]
        if upper:
            keep = jcol >= start + row_of_block
            row_of_block, jcol, vals = row_of_block[keep], jcol[keep], vals[keep]
        order = np.lexsort((jcol, row_of_block))
        indptr = np.zeros(nrow + 1, dtype=np.int64)
        np.cumsum(np.bincount(row_of_block, minlength=nrow), out=indptr[1:])
        return indptr, jcol[order], np.ascontiguousarray(vals[order])

    def petsc_matrix(self, mass_weighted: bool = True, symmetric: bool = False,
                     exclude_atom: int | None = None):
        """Assembled PETSc ``MPIBAIJ`` (or ``MPISBAIJ`` when ``symmetric``) matrix, block size 3,
        preallocated exactly from the local CSR. D (eV/(Å² amu)) when ``mass_weighted``, else H;
        without the rows and columns of ``exclude_atom`` when given."""
        from hpcvib.linalg.petsc_env import init_petsc

        PETSc = init_petsc()
        with log_event("hpcvibPetscMatrix"):
            return self._build_petsc_matrix(PETSc, mass_weighted, symmetric, exclude_atom)

    def _build_petsc_matrix(self, PETSc, mass_weighted, symmetric, exclude_atom):
        indptr, jcol, vals = self.local_csr(mass_weighted, upper=symmetric, exclude_atom=exclude_atom)
        nloc = 3 * (len(indptr) - 1)
        nglob = self.n_dof - (3 if exclude_atom is not None else 0)
        size = ((nloc, nglob), (nloc, nglob))
        csr = (indptr.astype(PETSc.IntType), jcol.astype(PETSc.IntType), vals.reshape(-1))
        mat = PETSc.Mat()
        if symmetric:
            mat.createSBAIJ(size, 3, csr=csr, comm=self.comm)
        else:
            mat.createBAIJ(size, 3, csr=csr, comm=self.comm)
        mat.setOption(PETSc.Mat.Option.SYMMETRIC, True)
        mat.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, True)
        mat.assemble()
        return mat

    def to_original_order(self, petsc_array: np.ndarray) -> np.ndarray:
        """Reorder a full-length (3N) array from PETSc atom order to the original atom order."""
        return petsc_array.reshape(-1, 3)[self.layout.petsc_index].ravel()

    def to_petsc_order(self, original_array: np.ndarray) -> np.ndarray:
        """Reorder a full-length (3N) array from the original atom order to PETSc atom order
        (the inverse of :meth:`to_original_order`)."""
        out = np.empty((self.layout.n_atoms, 3))
        out[self.layout.petsc_index] = np.asarray(original_array, dtype=float).reshape(-1, 3)
        return out.ravel()

    def gather_scipy(self, mass_weighted: bool = False, root: int = 0):
        """The whole matrix as scipy CSR (3N×3N) in the original atom order on ``root``; None
        elsewhere. H in eV/Å² (default) or D in eV/(Å² amu)."""
        piece = (self.rows.rows, self.rows.indptr, self.rows.cols, self._scaled_blocks(mass_weighted))
        pieces = self.comm.gather(piece, root=root)
        if self.comm.rank != root:
            return None
        rows = np.concatenate([p[0] for p in pieces])
        counts = np.concatenate([np.diff(p[1]) for p in pieces])
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        br = BlockRows(self.layout.n_atoms, rows, indptr, np.concatenate([p[2] for p in pieces]),
                       np.concatenate([p[3] for p in pieces]))
        mat = br.to_scipy()
        mat.sort_indices()
        return mat


def assemble_hessian(comm, atoms, potential: Potential | str) -> DistributedHessian:
    """Compute this rank's block rows of the Hessian of ``atoms`` (collective over ``comm``).

    An error on any rank (e.g. a species missing from the potential) is raised on all ranks.
    """
    log = get_logger("hessian")
    pot = collective_call(comm, load_potential, potential)
    layout = distribute_atoms(comm, atoms)
    with log_event("hpcvibHessianRows"):
        rows = collective_call(comm, pot.hessian_rows, atoms, layout.owned)
    nnzb = comm.allreduce(rows.nnz_blocks)
    log.info("Hessian of %d atoms on %d rank(s): %d blocks (%.1f per row), %.2f GB",
             len(atoms), comm.size, nnzb, nnzb / max(len(atoms), 1), nnzb * 72 / 1e9)
    return DistributedHessian(layout, rows, atoms.get_masses(), pot.name)
