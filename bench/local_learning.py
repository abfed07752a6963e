"""Benchmark: does a surrogate trained on exact per-atom entropies ΔS_i need fewer exact
calculations than one trained on configuration totals S_f? (issue "Exact local entropies")

Reads a database built by ``jobs/fe_local.toml`` (dense ΔS_i and per-atom descriptors of every
configuration), and for each number of training configurations m and each of ``--splits``
random splits (the same splits for both) fits

* the per-atom model: ΔS_i ≈ w · x_i on the training configurations' atom rows
  (hpcvib/learning/local_model.py), S_f predicted as Σ_i w · x_i;
* the configuration-level model of the same form: S_f ≈ w · Σ_i x_i (= w · ΔD, Eq. 14; EQML adds
  q(ΔDD), Eq. 17), as ``hpcvib fit`` does;

both per strain class, and scores S_f of the held-out configurations.

    python bench/local_learning.py ~/hpcvib-runs/fe_local/fe_local.h5 --splits 20

Writes bench/results/local_learning.json and results/local/learning_curve.png.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from hpcvib.database import Database  # noqa: E402
from hpcvib.learning.local_model import CORE_ATOMS, local_dataset, local_learning_curve  # noqa: E402
from hpcvib.learning.training import host_volume_per_atom  # noqa: E402


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for model, style in (("linear", "-"), ("eqml", "--")):
        rows = [r for r in curves if r["model"] == model]
        if not rows:
            continue
        m = [r["train_configurations"] for r in rows]
        for kind, colour in (("per_atom", "C3"), ("configuration", "C0")):
            ax.errorbar(m, [r[f"{kind}_test_rmse"] for r in rows], yerr=[r[f"{kind}_test_rmse_std"] for r in rows],
                        fmt="o" + style, color=colour, capsize=3,
                        label=f"{model}, trained on {'ΔS_i (per atom)' if kind == 'per_atom' else 'S_f (per cell)'}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training configurations (exact calculations)")
    ax.set_ylabel("test RMSE of S_f (k_B)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("database")
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20, 40, 80, 160])
    ap.add_argument("--models", nargs="+", default=["linear", "eqml"])
    ap.add_argument("--core", type=int, default=CORE_ATOMS,
                    help="atoms per configuration kept as individual rows (the rest: one lumped row)")
    ap.add_argument("--output", default=os.path.join(HERE, "results", "local_learning.json"))
    ap.add_argument("--plot", default=os.path.join(ROOT, "results", "local", "learning_curve.png"))
    args = ap.parse_args()
    db = Database(args.database)
    data = local_dataset(db, core=args.core)
    v0 = host_volume_per_atom(db.provenance())
    curves = []
    for model in args.models:
        curves += local_learning_curve(data, model, args.sizes, args.splits, seed=0, volume_per_atom0=v0)
        for row in curves[-len(args.sizes):]:
            print(json.dumps(row), flush=True)
    families = sorted(set(data["kinds"]))
    summary = {"database": os.path.basename(args.database), "configurations": len(data["y"]), "core_atoms": args.core,
               "families": {f: data["kinds"].count(f) for f in families},
               "strains": sorted(set(round(float(s), 4) for s in data["strains"])),
               "S_f_range_kB": [float(data["y"].min()), float(data["y"].max())], "curves": curves}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output + ".tmp", "w") as fh:
        json.dump(summary, fh, indent=1)
    os.replace(args.output + ".tmp", args.output)
    os.makedirs(os.path.dirname(args.plot), exist_ok=True)
    plot(curves, args.plot)


if __name__ == "__main__":
    main()
