"""Neighbour lists against ASE's (an independent implementation), incl. tiny and triclinic cells."""

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list

from hpcvib.geometry.neighbours import CellList, neighbour_list


def _as_sorted_pairs(i, j, d):
    key = np.lexsort((d[:, 2].round(8), d[:, 1].round(8), d[:, 0].round(8), j, i))
    return i[key], j[key], d[key]


def _compare_with_ase(atoms, cutoff):
    nl = neighbour_list(atoms, cutoff)
    i_ref, j_ref, d_ref = neighbor_list("ijD", atoms, cutoff)
    i = np.repeat(nl.centres, np.diff(nl.indptr))
    assert len(i) == len(i_ref)
    a = _as_sorted_pairs(i, nl.index, nl.vector_e3)
    b = _as_sorted_pairs(i_ref, j_ref, d_ref)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.allclose(a[2], b[2], atol=1e-10)
    assert np.allclose(nl.distance, np.linalg.norm(nl.vector_e3, axis=1))


@pytest.mark.parametrize("cutoff", [2.6, 5.3, 9.0])
def test_bcc_cubic_cell_matches_ase(cutoff):
    from ase.build import bulk

    atoms = bulk("Fe", "bcc", a=2.855, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.05, seed=1)
    _compare_with_ase(atoms, cutoff)


def test_cell_smaller_than_cutoff_has_all_images():
    """A 2-atom cell with a 5.3 Å cut-off: atoms see many images of each other and of themselves."""
    from ase.build import bulk

    atoms = bulk("Fe", "bcc", a=2.855, cubic=True)
    nl = neighbour_list(atoms, 5.3)
    assert np.all(np.diff(nl.indptr) == 58)  # 8 + 6 + 12 + 24 + 8 neighbours within 5.3 Å in bcc
    _compare_with_ase(atoms, 5.3)


def test_triclinic_cell_matches_ase():
    rng = np.random.default_rng(3)
    cell = np.array([[7.0, 0.0, 0.0], [2.5, 6.5, 0.0], [-1.8, 1.2, 6.8]])
    atoms = Atoms("Si40", scaled_positions=rng.random((40, 3)), cell=cell, pbc=True)
    _compare_with_ase(atoms, 3.77)
    _compare_with_ase(atoms, 8.0)


def test_query_subset_equals_full_list():
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.1, seed=4)
    cl = CellList(atoms.get_positions(), np.asarray(atoms.get_cell()), 3.77)
    full = cl.query(None)
    sub = cl.query(np.array([5, 17, 100]))
    for a in (5, 17, 100):
        assert np.array_equal(sub.neighbours_of(a), full.neighbours_of(a))
    assert sub.slot[6] == -1
