"""One rule for 'the same minimum': explicit symmetry mapping (hpcvib.landscape.fingerprint)."""

import numpy as np
import pytest

from hpcvib.geometry.defects import DefectSpec, build_defect, dumbbell_clusters
from hpcvib.landscape.exact_minimum import relax_exact
from hpcvib.landscape.fingerprint import cell_point_group, find_duplicates, lattice_fingerprint, symmetry_equivalent
from hpcvib.potentials import load_potential

from conftest import fe_a0, serial_only

POT = load_potential("Fe_mm")


def test_point_group_of_cells():
    assert len(cell_point_group(np.eye(3) * 10.0)) == 48
    assert len(cell_point_group(np.diag([10.0, 10.0, 12.0]))) == 16
    assert len(cell_point_group(np.diag([9.0, 10.0, 12.0]))) == 8


def _relaxed_di_interstitial(index):
    shape = dumbbell_clusters(2, "110", 2)[index]
    return relax_exact(build_defect(DefectSpec("I", 2, "110", index, shape, 0), 4, fe_a0()), POT, 1e-5).atoms


@pytest.fixture(scope="module")
def di_interstitials():
    return [_relaxed_di_interstitial(i) for i in range(3)]


def _random_image(atoms, seed):
    """``atoms`` moved by a random cubic operation about the cell centre, a lattice
    translation, a small rigid drift, and its atoms permuted."""
    from hpcvib.landscape.fingerprint import cell_point_group as ops

    rng = np.random.default_rng(seed)
    g = ops(atoms.cell)[rng.integers(48)]
    out = atoms.copy()
    centre = 0.5 * np.diag(atoms.cell)
    a0 = fe_a0()
    shift = a0 / 2 * rng.integers(-3, 4) * np.ones(3) + a0 * rng.integers(-2, 3, size=3)
    out.positions = (atoms.positions - centre) @ g.T + centre + shift + 1e-4 * rng.normal(size=3)
    return out[rng.permutation(len(out))]


@serial_only()
def test_symmetry_images_are_the_same_minimum(di_interstitials):
    a0 = fe_a0()
    for i, atoms in enumerate(di_interstitials):
        for seed in range(3):
            image = _random_image(atoms, 10 * i + seed)
            assert symmetry_equivalent(atoms, image, 1e-2, a0)
            assert np.allclose(lattice_fingerprint(atoms, a0), lattice_fingerprint(image, a0), atol=1e-3)


@serial_only()
def test_distinct_minima_are_not_merged(di_interstitials):
    a0 = fe_a0()
    a, b, _ = di_interstitials
    assert not symmetry_equivalent(a, b, 1e-2, a0)
    moved = a.copy()
    moved.positions[0] += [0.05, 0.0, 0.0]  # one atom off by more than the tolerance
    assert not symmetry_equivalent(a, moved, 1e-2, a0)


def test_find_duplicates_asks_the_explicit_check():
    fp = np.array([0.3, 0.2])
    entries = [("a", 10, -1.0, fp), ("b", 10, -1.0, fp), ("c", 10, -1.0, fp)]
    assert find_duplicates(entries, 1e-4, 1e-3) == {"b": "a", "c": "a"}
    # with the explicit check, 'c' is another minimum that shares energy and fingerprint
    assert find_duplicates(entries, 1e-4, 1e-3, same=lambda x, y: {x, y} == {"a", "b"}) == {"b": "a"}


def test_find_duplicates_matches_the_all_pairs_scan():
    """The energy-bisected search gives the classes of the plain scan over every earlier
    original (first in order wins), on entries with many near-equal energies."""
    rng = np.random.default_rng(3)
    entries = [(f"k{i}", 10 + int(rng.integers(0, 2)), float(rng.integers(0, 40)) * 1e-4 + rng.normal(0, 2e-5),
                rng.integers(0, 3, size=2) * 1e-3) for i in range(400)]

    def plain(entries, energy_tol, fp_tol, same):
        originals, dup = [], {}
        for key, n, e, fp in entries:
            match = next((o for o in originals if o[1] == n and abs(e - o[2]) < energy_tol
                          and np.abs(fp - o[3]).max() < fp_tol and same(o[0], key)), None)
            if match is None:
                originals.append((key, n, e, fp))
            else:
                dup[key] = match[0]
        return dup

    same = lambda a, b: (int(a[1:]) + int(b[1:])) % 3 != 0  # noqa: E731 — an arbitrary explicit check
    expected = plain(entries, 1e-4, 5e-4, same)
    assert len(expected) > 100
    assert find_duplicates(entries, 1e-4, 5e-4, same) == expected


def _fcc_divacancy(a0, pair):
    """A relaxed fcc divacancy (Fe_mm in its metastable fcc lattice) in a 3×3×3 cell."""
    from hpcvib.geometry.structures import cubic_supercell

    atoms = cubic_supercell("fcc", 3, a0)
    del atoms[list(pair)]
    return relax_exact(atoms, POT, 1e-5).atoms


@serial_only()
def test_fcc_host_fingerprint_and_symmetry():
    """fcc hosts: perfect sites sit at distance 0 from the fcc lattice (and not from bcc); a
    symmetry image of a relaxed fcc divacancy is the same minimum, a divacancy of another shell
    is not."""
    from hpcvib.geometry.structures import cubic_supercell
    from hpcvib.potentials import lattice_constant

    a0 = lattice_constant(POT, "fcc")
    perfect = cubic_supercell("fcc", 3, a0)
    perfect.positions += 0.01  # a rigid drift is removed
    assert lattice_fingerprint(perfect, a0, lattice="fcc").max() < 1e-12
    assert lattice_fingerprint(perfect, a0, lattice="bcc").max() > 0.1 * a0
    first = _fcc_divacancy(a0, (0, 1))  # atoms 0 and 1 of a cubic fcc cell: nearest neighbours
    second = _fcc_divacancy(a0, (0, 4))  # atom 4 is the next cubic cell's corner along z: a0 apart
    rng = np.random.default_rng(3)
    for seed in range(3):
        g = cell_point_group(first.cell)[rng.integers(48)]
        image = first.copy()
        centre = 0.5 * np.diag(first.cell)
        image.positions = (first.positions - centre) @ g.T + centre + a0 / 2 * np.array([1, 1, 0]) * rng.integers(-2, 3)
        image = image[rng.permutation(len(image))]
        assert symmetry_equivalent(first, image, 1e-2, a0, "fcc")
        assert np.allclose(lattice_fingerprint(first, a0, lattice="fcc"), lattice_fingerprint(image, a0, lattice="fcc"),
                           atol=1e-6)
    assert not symmetry_equivalent(first, second, 1e-2, a0, "fcc")
