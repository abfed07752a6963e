"""When are two relaxed defect configurations the same minimum? (one rule, used everywhere)

Two configurations of a crystal host are the same minimum when one is mapped onto the other,
atom for atom within a position tolerance, by an operation of the host's point group that maps
the periodic cell onto itself followed by a translation (a lattice vector plus the small rigid
drift that relaxations from randomised starts pick up along the zero modes). That is checked
explicitly (:func:`symmetry_equivalent`) — energy alone, or any scalar fingerprint, can merge
distinct minima.

Because the explicit check costs a few hundred neighbour queries, it runs only for pairs that
pass two necessary conditions: equal atom counts, energies within ``energy_tol`` and equal
*lattice fingerprints* (:func:`lattice_fingerprint`, the sorted distances of the atoms from
their nearest perfect-lattice site, which every symmetry operation and translation preserves).
"""

from __future__ import annotations

import bisect
import itertools

import numpy as np

from hpcvib.geometry.structures import minimum_image, site_distances


def lattice_fingerprint(atoms, a0: float, n_top: int = 64, lattice: str = "bcc") -> np.ndarray:
    """Sorted (descending) distances (Å) of the atoms from their nearest site of the perfect
    bcc or fcc ``lattice`` of parameter ``a0``, after removing the rigid translation (the median offset; a
    relaxation from randomised positions drifts along the zero modes) — the ``n_top`` largest.
    Invariant under the lattice's symmetry operations and translations, so symmetry-equivalent
    relaxed defects coincide."""
    return np.sort(site_distances(atoms.positions, a0, lattice))[::-1][:n_top]


def cell_point_group(cell, tol: float = 1e-6) -> np.ndarray:
    """The signed permutation matrices (Cartesian, acting on column vectors) that map the
    periodic ``cell`` onto itself: all 48 of m-3m for a cubic cell, fewer for others."""
    cell = np.asarray(cell, dtype=float)
    inv = np.linalg.inv(cell)
    ops = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            g = np.zeros((3, 3))
            for row, (col, s) in enumerate(zip(perm, signs)):
                g[row, col] = s
            image = (cell @ g.T) @ inv  # the cell vectors mapped, in cell coordinates
            if np.abs(image - np.rint(image)).max() < tol and abs(abs(np.linalg.det(np.rint(image))) - 1) < tol:
                ops.append(g)
    return np.array(ops)


def symmetry_equivalent(a, b, tol: float = 1e-2, a0: float | None = None, lattice: str = "bcc") -> bool:
    """Whether configuration ``b`` is ``a`` moved by a point operation of the cell and a
    translation, every atom within ``tol`` (Å) of its image (same cell, same species).

    The translation is fixed by sending the atom of ``a`` farthest from a perfect lattice site
    (the defect core; any atom when ``a0`` is None) onto each atom of ``b`` of the same species
    and the same lattice-site distance in turn; ``lattice`` is the host's, bcc or fcc."""
    from scipy.spatial import cKDTree

    if len(a) != len(b) or not np.allclose(np.asarray(a.cell), np.asarray(b.cell), atol=1e-8):
        return False
    if sorted(a.numbers.tolist()) != sorted(b.numbers.tolist()):
        return False
    cell = np.asarray(a.cell)
    if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-9:
        return _equivalent_general(a, b, tol, a0, lattice)
    box = np.diag(cell)
    trees = {z: cKDTree(_wrap(b.positions[b.numbers == z], box), boxsize=box) for z in set(b.numbers.tolist())}
    anchor, candidates = _anchor_and_candidates(a, b, tol, a0, lattice)
    centre = 0.5 * box
    for g in cell_point_group(cell):
        moved = (a.positions - centre) @ g.T + centre
        for j in candidates:
            shifted = _wrap(moved + (b.positions[j] - moved[anchor]), box)
            if all(_all_matched(trees[z], shifted[a.numbers == z], tol) for z in trees):
                return True
    return False


def _wrap(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Points folded into [0, box) (what a periodic cKDTree requires)."""
    out = np.mod(points, box)
    out[out >= box] = 0.0
    return out


def _anchor_and_candidates(a, b, tol, a0, lattice):
    if a0 is None:
        return 0, np.flatnonzero(b.numbers == a.numbers[0])
    da, db = site_distances(a.positions, a0, lattice), site_distances(b.positions, a0, lattice)
    anchor = int(np.argmax(da))
    close = np.abs(db - da[anchor]) < 2 * tol
    close &= b.numbers == a.numbers[anchor]
    return anchor, np.flatnonzero(close)


def _all_matched(tree, points, tol) -> bool:
    """Every point within ``tol`` of a distinct tree point."""
    dist, idx = tree.query(points, distance_upper_bound=tol)
    return bool(np.all(np.isfinite(dist)) and len(np.unique(idx)) == len(idx))


def _equivalent_general(a, b, tol, a0, lattice) -> bool:
    """Slow path for non-orthogonal cells: minimum-image distances, O(N²) per trial."""
    cell = np.asarray(a.cell)
    anchor, candidates = _anchor_and_candidates(a, b, tol, a0, lattice)
    centre = 0.5 * cell.sum(axis=0)
    for g in cell_point_group(cell):
        moved = (a.positions - centre) @ g.T + centre
        for j in candidates:
            shifted = moved + (b.positions[j] - moved[anchor])
            d = np.linalg.norm(minimum_image(shifted[:, None, :] - b.positions[None, :, :], cell), axis=2)
            d[a.numbers[:, None] != b.numbers[None, :]] = np.inf
            if np.all(d.min(axis=1) < tol) and len(np.unique(d.argmin(axis=1))) == len(a):
                return True
    return False


def find_duplicates(entries, energy_tol: float, fingerprint_tol: float, same=None) -> dict:
    """{duplicate key: original key} for (key, n_atoms, energy, fingerprint) entries; the first
    entry (in the given order) of every equivalence class is the original.

    A pair is a duplicate when atom counts agree, energies differ by less than ``energy_tol``
    (eV), fingerprints by less than ``fingerprint_tol`` (Å), and — when ``same`` is given —
    ``same(key_a, key_b)`` confirms it (the explicit symmetry check)."""
    originals: list = []  # in order of arrival
    by_energy: list = []  # (energy, arrival index), sorted: candidates by bisection
    dup = {}
    for key, n, e, fp in entries:
        lo = bisect.bisect_right(by_energy, (e - energy_tol, np.inf))
        hi = bisect.bisect_left(by_energy, (e + energy_tol, -np.inf))
        for i in sorted(index for _, index in by_energy[lo:hi]):
            okey, on, oe, ofp = originals[i]
            if (n == on and abs(e - oe) < energy_tol and len(fp) == len(ofp)
                    and np.abs(fp - ofp).max() < fingerprint_tol and (same is None or same(okey, key))):
                dup[key] = okey
                break
        else:
            bisect.insort(by_energy, (e, len(originals)))
            originals.append((key, n, e, fp))
    return dup


#: candidate images of the anchor atom tried per point operation (a perfect crystal maps every
#: atom onto every other: a subset of the translations gives finer, still correct, orbits)
MAX_ORBIT_CANDIDATES = 64


def self_symmetry_orbits(atoms, energies: np.ndarray, tol: float = 1e-5, energy_tol: float = 1e-6) -> np.ndarray:
    """Orbits of the atoms under the operations (cell point group + translation) that map the
    configuration onto itself, every atom within ``tol`` (Å) of an atom of its species.

    Returns, for each atom, the index of its orbit's representative (the lowest index). Atoms of
    one orbit share every rotation-invariant per-atom quantity (e.g. tr (ln D)_ii). The anchor
    is the atom whose energy (``energies``, eV) is farthest from the median; its candidate
    images are the atoms of equal energy (``energy_tol``), at most
    :data:`MAX_ORBIT_CANDIDATES` — fewer operations give finer orbits, never wrong ones.
    Non-orthogonal cells: every atom is its own orbit (no reduction)."""
    from scipy.spatial import cKDTree

    n = len(atoms)
    parent = np.arange(n)
    cell = np.asarray(atoms.cell)
    if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-9:
        return parent
    box = np.diag(cell)
    energies = np.asarray(energies, dtype=float)
    anchor = int(np.argmax(np.abs(energies - np.median(energies))))
    same = np.flatnonzero((np.abs(energies - energies[anchor]) <= energy_tol) & (atoms.numbers == atoms.numbers[anchor]))
    trees = {z: (cKDTree(_wrap(atoms.positions[atoms.numbers == z], box), boxsize=box), np.flatnonzero(atoms.numbers == z))
             for z in set(atoms.numbers.tolist())}
    centre = 0.5 * box
    for g in cell_point_group(cell):
        moved = (atoms.positions - centre) @ g.T + centre
        for j in same[:MAX_ORBIT_CANDIDATES]:
            shifted = _wrap(moved + (atoms.positions[j] - moved[anchor]), box)
            image = _matched_permutation(trees, shifted, atoms.numbers, tol)
            if image is not None:
                _union(parent, image)
    return np.array([_root(parent, i) for i in range(n)])


def _matched_permutation(trees, points, numbers, tol):
    """The permutation sending atom i to the atom within ``tol`` of ``points[i]``, or None."""
    image = np.empty(len(points), dtype=int)
    for z, (tree, members) in trees.items():
        mask = numbers == z
        dist, idx = tree.query(points[mask], distance_upper_bound=tol)
        if not np.all(np.isfinite(dist)) or len(np.unique(idx)) != len(idx):
            return None
        image[mask] = members[idx]
    return image


def _root(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _union(parent, image):
    for i, j in enumerate(image):
        ri, rj = _root(parent, i), _root(parent, int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
