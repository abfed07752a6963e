"""The per-atom surrogate (hpcvib.learning.local_model): its rows sum exactly to the
configuration-level features ΔD ⊕ q(ΔDD) of Eq. 14/17 (real bSO(4) descriptors of a vacancy
cell against the perfect cell), the lumped far-field row keeps every sum, and on synthetic
per-atom truths the per-atom fit needs fewer configurations than the total-only fit."""

import numpy as np
from conftest import fe_a0, relaxed_fe_vacancy, serial_only
from mpi4py import MPI

from hpcvib.geometry.structures import bcc_supercell
from hpcvib.learning.descriptors import DescriptorSettings, descriptor_excess, descriptor_sums
from hpcvib.learning.local_model import atom_rows, local_learning_curve
from hpcvib.learning.models import entropy_features

pytestmark = serial_only()


def test_rows_sum_to_the_configuration_features():
    settings = DescriptorSettings(jmax=2, rcut=4.0)
    atoms = relaxed_fe_vacancy(4)
    sums = descriptor_sums(MPI.COMM_SELF, atoms, settings, keep_per_atom=True)
    bulk = descriptor_sums(MPI.COMM_SELF, bcc_supercell(4, fe_a0()), settings)
    dD, dDD = descriptor_excess(sums, bulk.D, bulk.DD, bulk.n_atoms)
    ds = np.random.default_rng(0).normal(size=len(atoms))
    rows, targets = atom_rows(sums.per_atom, ds, dD, dDD, core=10)
    assert rows.shape[0] == 11 and len(targets) == 11
    assert np.allclose(rows.sum(axis=0), entropy_features(dD, dDD)[0], rtol=1e-10, atol=1e-10)
    assert np.isclose(targets.sum(), ds.sum(), rtol=0, atol=1e-12)
    # the core rows are the atoms whose descriptors differ most from the bulk: the vacancy's neighbours
    k = len(dD)
    assert np.linalg.norm(rows[0, :k]) >= np.linalg.norm(rows[9, :k]) > 0


def _synthetic(n_configs=60, n_atoms=50, k=4, seed=1):
    """Per-atom targets ΔS_i = w·δ^i + small noise, δ^i sparse around a 'core'; strain 0."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=k)
    data = {"rows": [], "targets": [], "X": [], "y": [], "strains": np.zeros(n_configs), "keys": [], "kinds": []}
    for c in range(n_configs):
        delta = rng.normal(size=(n_atoms, k)) * np.exp(-np.arange(n_atoms) / 5.0)[:, None]
        q = np.zeros((n_atoms, k * (k + 1) // 2))
        x = np.hstack([delta, q])
        t = delta @ w + rng.normal(0, 1e-3, n_atoms)
        data["rows"].append(x)
        data["targets"].append(t)
        data["X"].append(x.sum(axis=0))
        data["y"].append(t.sum())
    data["X"], data["y"] = np.array(data["X"]), np.array(data["y"])
    return data


def test_per_atom_training_needs_fewer_configurations():
    """With 3 training configurations (4 weights), only the per-atom fit is determined; with 40
    both are, and both errors approach the noise."""
    curves = local_learning_curve(_synthetic(), "linear", train_sizes=(3, 40), n_splits=5, volume_per_atom0=11.6)
    small, large = curves
    assert small["per_atom_test_rmse"] < 0.1 * small["configuration_test_rmse"]
    assert large["per_atom_test_rmse"] < 0.05
    assert large["configuration_test_rmse"] < 0.1
