"""Spatial partition of atoms over MPI ranks by recursive coordinate bisection (RCB).

Each cut splits the longest extent of the current block (in Å, along a lattice direction) at the
atom that balances the counts in proportion to the ranks on either side. The result depends only
on positions and the number of parts, so every rank computes the same partition without
communication.
"""

from __future__ import annotations

import numpy as np


def spatial_partition(positions: np.ndarray, cell: np.ndarray, nparts: int) -> np.ndarray:
    """Owner (0..nparts-1) of every atom; blocks are spatially compact and balanced to ±1 atom."""
    n = len(positions)
    owner = np.zeros(n, dtype=np.int64)
    if nparts <= 1 or n == 0:
        return owner
    cell = np.asarray(cell, dtype=float)
    frac = positions @ np.linalg.inv(cell)
    frac -= np.floor(frac)
    lengths = np.linalg.norm(cell, axis=1)
    _bisect(np.arange(n), frac, lengths, 0, nparts, owner)
    return owner


def _bisect(idx, frac, lengths, first, nparts, owner):
    if nparts == 1:
        owner[idx] = first
        return
    sub = frac[idx]
    extent = (sub.max(axis=0) - sub.min(axis=0)) * lengths
    axis = int(np.argmax(extent))
    left_parts = nparts // 2
    nleft = int(round(len(idx) * left_parts / nparts))
    order = np.lexsort((idx, sub[:, axis]))  # ties broken by atom index: deterministic
    _bisect(idx[order[:nleft]], frac, lengths, first, left_parts, owner)
    _bisect(idx[order[nleft:]], frac, lengths, first + left_parts, nparts - left_parts, owner)
