"""Surrogate-model benchmarks (issue targets: S_f of a 128 000-atom Fe cell from coordinates in
< 30 s on one core; ⟨κ⟩ over 10 502 events in < 10 s).

* predict: descriptors of the defect cell and of its perfect reference (bSO(4), jmax 4, 35
  components, r_cut 5 Å; the reference on 16 atoms of the same lattice, as ``hpcvib predict``) + the linear and EQML models of the demo database (or, without it, a
  model fitted to random sums: the cost does not depend on the weights) — wall time on 1 core.
* kappa: ⟨κ⟩ (Eq. 35) over all M² pairs of M = 10 502 synthetic events, blocks of 2 048 rows.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python bench/models.py
"""

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _util import append_result  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "models.jsonl")


def bench_predict(n_cells: int = 40):
    from mpi4py import MPI

    from hpcvib.geometry.structures import bcc_supercell
    from hpcvib.learning.descriptors import DescriptorSettings
    from hpcvib.learning.models import BayesianLinearModel, EQMLModel, SavedModel, entropy_features
    from hpcvib.learning.prediction import predict_entropy, primitive_reference
    from hpcvib.potentials import lattice_constant, load_potential

    a0 = lattice_constant(load_potential("Fe_mm"))
    settings = DescriptorSettings(jmax=4, rcut=5.0)
    rng = np.random.default_rng(0)
    dD, dDD = rng.normal(size=(200, 35)), rng.normal(size=(200, 35, 35))
    dDD = dDD + dDD.transpose(0, 2, 1)
    small = bcc_supercell(4, a0)
    del small[0]
    predict_entropy(MPI.COMM_SELF, SavedModel(BayesianLinearModel().fit(dD, rng.normal(size=200)), "S_f", "linear",
                                              settings.as_dict(), "Fe_mm", ""), small, bcc_supercell(4, a0), settings)
    rows = []
    perfect = bcc_supercell(n_cells, a0)
    atoms = perfect.copy()
    del atoms[[0, 1, 2]]
    for kind, model in (("linear", BayesianLinearModel().fit(dD, rng.normal(size=200))),
                        ("eqml", EQMLModel().fit(entropy_features(dD, dDD), rng.normal(size=200)))):
        saved = SavedModel(model, "S_f", kind, settings.as_dict(), "Fe_mm", "")
        t = time.perf_counter()
        res = predict_entropy(MPI.COMM_SELF, saved, atoms, primitive_reference(perfect), settings)
        wall = time.perf_counter() - t
        rows.append({"bench": "predict_S_f", "model": kind, "n_atoms": len(atoms), "wall_s": wall,
                     "includes": "descriptors of the defect cell and of a 16-atom perfect reference (as hpcvib predict), model, std", "cores": 1,
                     "prediction_finite": bool(np.isfinite(res["prediction"]))})
    return rows


def bench_kappa(m: int = 10502):
    from hpcvib.physics.compensation import direct_fit, mean_kappa

    rng = np.random.default_rng(1)
    de = rng.uniform(0.1, 7.0, m)
    ln_nu = 0.8 * de + 1.0 + rng.normal(size=m) * 0.65
    pred = ln_nu + rng.normal(size=m) * 0.3
    t = time.perf_counter()
    fit = direct_fit(ln_nu, de)
    k = mean_kappa(pred, de, fit["delta_E0_eV"])
    wall = time.perf_counter() - t
    return [{"bench": "mean_kappa", "events": m, "pairs": m * m, "wall_s": wall, "cores": 1,
             "mean_kappa": k["mean_kappa_all_pairs"]}]


def main():
    for row in bench_predict() + bench_kappa():
        row["date"] = time.strftime("%Y-%m-%d")
        append_result(RESULTS, row)
        print(row, flush=True)


if __name__ == "__main__":
    main()
