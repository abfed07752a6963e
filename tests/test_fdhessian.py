"""Generic route: coloured central-difference Hessian of an ASE calculator vs the analytic one."""

import numpy as np

from hpcvib.geometry.structures import diamond_supercell
from hpcvib.potentials import load_potential
from hpcvib.potentials.calculator import HpcvibCalculator
from hpcvib.potentials.fdhessian import coloured_fd_hessian, greedy_colouring


def test_coloured_fd_hessian_equals_analytic():
    """SW Si, 512 atoms (21.7 Å cell): range R = 2 r_c = 7.54 Å, so atoms ≥ 15.1 Å apart share
    a colour. The FD Hessian (h = 1e-4 Å, O(h²) error) agrees with the analytic one, and the
    number of force calls is 6 × colours < 6 N."""
    atoms = diamond_supercell(4, 5.431)
    atoms.positions += np.random.default_rng(0).normal(scale=0.03, size=atoms.positions.shape)
    pot = load_potential("Si_sw")
    H, calls = coloured_fd_hessian(atoms, HpcvibCalculator(pot), hessian_range=2 * pot.cutoff, step=1e-4)
    Ha = pot.hessian(atoms)
    assert abs(H - Ha).max() < 1e-5
    assert calls < 6 * len(atoms)


def test_colouring_separates_atoms():
    atoms = diamond_supercell(3, 5.431)
    colour = greedy_colouring(atoms, 7.0)
    pos = atoms.get_positions()
    cell = np.asarray(atoms.get_cell()).diagonal()
    for c in np.unique(colour):
        members = pos[colour == c]
        d = members[:, None, :] - members[None, :, :]
        d -= cell * np.round(d / cell)
        dist = np.linalg.norm(d, axis=2) + np.eye(len(members)) * 1e9
        assert dist.min() >= 7.0
