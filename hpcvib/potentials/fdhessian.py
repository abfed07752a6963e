"""Generic Hessian of any ASE calculator by central differences of forces with graph colouring.

Atoms ``i`` and ``j`` may be displaced together when no atom's force depends on both, i.e. when
they are farther apart than twice the Hessian range R (for EAM/SW R = 2 r_cut). A greedy colouring
of that conflict graph gives O(1) colours for a fixed density, so the cost is 6 × colours force
calls, independent of N for large cells (THEORY §8).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from hpcvib.geometry.neighbours import CellList
from hpcvib.log import get_logger


def greedy_colouring(atoms, conflict_radius: float) -> np.ndarray:
    """Colour of each atom such that atoms of one colour are ≥ ``conflict_radius`` apart
    (periodic images included). Greedy, in atom order."""
    cl = CellList(atoms.get_positions(), np.asarray(atoms.get_cell()), conflict_radius)
    nl = cl.query(None)
    colour = np.full(len(atoms), -1, dtype=np.int64)
    for i in range(len(atoms)):
        taken = set(colour[nl.index[nl.indptr[i]:nl.indptr[i + 1]]].tolist())
        c = 0
        while c in taken:
            c += 1
        colour[i] = c
    return colour


def force_derivative(work, pos0: np.ndarray, members, alpha: int, step: float) -> np.ndarray:
    """−∂F/∂x_{m,α} (N×3, eV/Å²) summed over the atoms m of ``members`` displaced together along α,
    by central differences of the forces of ``work`` (an Atoms with a calculator) about ``pos0``;
    error O(step²). Leaves ``work`` at a displaced configuration."""
    forces = []
    for sign in (1.0, -1.0):
        x = pos0.copy()
        x[members, alpha] += sign * step
        work.set_positions(x)
        forces.append(work.get_forces())
    return -(forces[0] - forces[1]) / (2.0 * step)


def coloured_fd_hessian(atoms, calculator, hessian_range: float, step: float = 1e-4):
    """Symmetrised central-difference Hessian (scipy CSR, 3N×3N, eV/Å²) of ``calculator``.

    Parameters
    ----------
    atoms : periodic structure (not modified).
    calculator : any ASE calculator giving forces.
    hessian_range : R, Å: H_{ij} is taken as zero for |r_ij| ≥ R (2 × cut-off for EAM/SW).
    step : displacement h, Å; error O(h²).

    Returns
    -------
    (H, n_force_calls)
    """
    log = get_logger("fdhessian")
    work = atoms.copy()
    work.calc = calculator
    n = len(work)
    colour = greedy_colouring(work, 2.0 * hessian_range)
    ncol = int(colour.max()) + 1
    log.info("coloured FD Hessian: %d atoms, %d colours, %d force calls", n, ncol, 6 * ncol)
    cl = CellList(work.get_positions(), np.asarray(work.get_cell()), hessian_range)
    nl = cl.query(None)
    pos0 = work.get_positions()
    rows, cols, vals = [], [], []
    for c in range(ncol):
        members = np.flatnonzero(colour == c)
        for alpha in range(3):
            dF = force_derivative(work, pos0, members, alpha, step)  # = ∂²E/∂x_k ∂x_{i,alpha}, rows k
            for i in members:
                near = np.unique(np.append(nl.index[nl.indptr[i]:nl.indptr[i + 1]], i))
                k = (3 * near[:, None] + np.arange(3)).ravel()
                rows.append(k)
                cols.append(np.full(len(k), 3 * i + alpha))
                vals.append(dF[near].ravel())
    work.set_positions(pos0)
    H = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(3 * n, 3 * n))
    return 0.5 * (H + H.T), 6 * ncol


def fd_block_rows(atoms, calculator, atoms_idx, hessian_range: float, step: float = 1e-4):
    """Block rows i ∈ ``atoms_idx`` of the central-difference Hessian (eV/Å²) by displacing each
    of those atoms alone: 6 force calls per atom instead of 6 × colours for the whole matrix, for
    callers that need a few rows (the Bloch sum of a perfect crystal needs one). Row i is the
    transpose of the displaced column (H is symmetric): returns, per atom i, the neighbours b
    (|r_ib| < ``hessian_range``, i included, sorted) and the blocks H(i, b), shape (len(b), 3, 3)."""
    work = atoms.copy()
    work.calc = calculator
    cl = CellList(work.get_positions(), np.asarray(work.get_cell()), hessian_range)
    nl = cl.query(None)
    pos0 = work.get_positions()
    out = []
    for i in atoms_idx:
        near = np.unique(np.append(nl.index[nl.indptr[i]:nl.indptr[i + 1]], i))
        column = np.empty((len(near), 3, 3))  # column[b, x, alpha] = H(b x, i alpha)
        for alpha in range(3):
            column[:, :, alpha] = force_derivative(work, pos0, [i], alpha, step)[near]
        out.append((near, np.ascontiguousarray(column.transpose(0, 2, 1))))
    return out
