"""The shipped S_f models (hpcvib/data/models) on defect cells relaxed by another code (LAMMPS,
conjugate gradients): the prediction must agree with the exact S_f of the same cell (hpcvib's
factorisation route) within the model's stated uncertainty."""

import json
import subprocess

import ase.io
import numpy as np
import pytest

import lammps_peer
from hpcvib.geometry.defects import build_defect, dumbbell_clusters, DefectSpec, site_shapes
from hpcvib.learning.models import builtin_models

from conftest import fe_a0, serial_only
from test_cli import HPCVIB, clean_env as _env

pytestmark = [serial_only(), pytest.mark.skipif(not lammps_peer.available(), reason="LAMMPS peer not installed")]

def _cells():
    """A divacancy (2nd shell), a <110> di-interstitial and a vacancy tetramer, 1024-site cells,
    started off-lattice by a seeded 0.05 Å rattle so LAMMPS finds its own path."""
    rng = np.random.default_rng(11)
    out = {}
    specs = {"V2": DefectSpec("V", 2, "vacancy", 1, site_shapes(2, 2)[1], 0),
             "I2": DefectSpec("I", 2, "110", 0, dumbbell_clusters(2, "110", 1)[0], 0),
             "V4": DefectSpec("V", 4, "vacancy", 3, site_shapes(4, 2)[3], 0)}
    for name, spec in specs.items():
        atoms = build_defect(spec, 8, fe_a0())
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        out[name] = atoms
    return out


def test_builtin_models_are_listed():
    assert {"Fe_mm-Sf-linear"} <= set(builtin_models())


@pytest.mark.parametrize("model", ["Fe_mm-Sf-linear"])
def test_builtin_model_predicts_lammps_relaxed_cells(model, tmp_path):
    from hpcvib.potentials import data_file

    pot_file = data_file("Fe_mm.eam.fs")  # the same file LAMMPS distributes
    for name, atoms in _cells().items():
        relaxed = lammps_peer.minimise(atoms, "eam/fs", pot_file, ["Fe"], tmp_path)
        path = tmp_path / f"{name}.extxyz"
        ase.io.write(path, relaxed)
        exact = json.loads(subprocess.run(HPCVIB + ["thermo", str(path), "-p", "Fe_mm", "--reference", "auto",
                                                    "--json"], capture_output=True, text=True, env=_env(),
                                          timeout=300, check=True).stdout)
        pred = json.loads(subprocess.run(HPCVIB + ["predict", model, str(path), "--json"], capture_output=True,
                                         text=True, env=_env(), timeout=300, check=True).stdout)
        sigma = max(pred["S_f_std_kB"], pred.get("S_f_std_pops_kB", 0.0))
        assert abs(pred["S_f_kB"] - exact["S_f_kB"]) < 3 * sigma, (name, pred, exact["S_f_kB"])
        assert abs(pred["strain"]) < 1e-6  # the per-strain model read the (unstrained) cell's strain


def test_prediction_runs_without_petsc(tmp_path):
    """Descriptors, models and prediction import and run with petsc4py and slepc4py blocked
    (a laptop or login node without PETSc can predict)."""
    import sys

    script = tmp_path / "nopetsc.py"
    script.write_text(
        "import sys\n"
        "sys.modules['petsc4py'] = None\n"
        "sys.modules['slepc4py'] = None\n"
        "from mpi4py import MPI\n"
        "from hpcvib.learning.models import SavedModel\n"
        "from hpcvib.learning.prediction import predict_entropy, primitive_reference, settings_from_model\n"
        "from hpcvib.geometry.structures import bcc_supercell\n"
        "from hpcvib.physics.thermo import perfect_cubic_reference\n"
        "saved = SavedModel.load('Fe_mm-Sf-linear')\n"
        "atoms = bcc_supercell(4, 2.855312)\n"
        "del atoms[0]\n"
        "ref = primitive_reference(perfect_cubic_reference(atoms))\n"
        "print(predict_entropy(MPI.COMM_SELF, saved, atoms, ref, settings_from_model(saved))['S_f_kB'])\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.isfinite(float(proc.stdout.strip().splitlines()[-1]))
