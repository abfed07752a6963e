"""Benchmark: exact formation entropy S_f of a relaxed vacancy in bcc Fe (Fe_mm), 2 n³ cells.

    python bench/thermo.py --sizes 8 12 16 20 --configs 1x1 1x2 2x1 --dense-max 12
    python bench/thermo.py --orderings amd amf qamd pord --sizes 12 16 --configs 1x2
    python bench/thermo.py --table            # table + log-log plot from stored results

A configuration ``PxT`` is P MPI ranks with T BLAS/OpenMP threads each. Each run factors D_(-k)
of the defect cell and of the perfect cell (MUMPS LDLᵀ, determinant and inertia), and for sizes
up to --dense-max also diagonalises both densely (LAPACK eigvalsh) to give the agreement and the
speed-up measured side by side. Relaxed structures are cached in bench/cache/ (not committed).
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "thermo.jsonl")
CACHE = os.path.join(HERE, "cache")


def relaxed_vacancy(n: int) -> str:
    """Path of the relaxed (n a0)³ vacancy cell (LBFGS to 1e-6 eV/Å), computed once."""
    import ase.io

    path = os.path.join(CACHE, f"fe_vacancy_{n}.extxyz")
    if os.path.exists(path):
        return path
    from ase.optimize import LBFGS

    from hpcvib.calculator import HpcvibCalculator
    from hpcvib.potentials import lattice_constant, load_potential
    from hpcvib.structures import bcc_supercell

    os.makedirs(CACHE, exist_ok=True)
    pot = load_potential("Fe_mm")
    atoms = bcc_supercell(n, lattice_constant(pot))
    del atoms[0]
    atoms.calc = HpcvibCalculator(pot)
    t0 = time.perf_counter()
    LBFGS(atoms, logfile=None).run(fmax=1e-6, steps=20000)
    print(f"relaxed n={n} ({len(atoms)} atoms) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    atoms.calc = None
    ase.io.write(path + ".tmp", atoms, format="extxyz")
    os.replace(path + ".tmp", path)
    return path


def worker(n: int, ordering: str, dense: int) -> None:
    import ase.io
    import scipy.linalg
    from mpi4py import MPI

    from hpcvib.hessian import assemble_hessian
    from hpcvib.potentials import load_potential
    from hpcvib.spectral import log_pseudo_determinant
    from hpcvib.thermo import formation_entropy, perfect_bcc_reference, without_zero_modes

    comm = MPI.COMM_WORLD
    pot = load_potential("Fe_mm")
    defect = ase.io.read(os.path.join(CACHE, f"fe_vacancy_{n}.extxyz"), parallel=False)
    bulk = perfect_bcc_reference(defect)
    out = {"n": n, "atoms": len(defect), "dof": 3 * len(defect), "ranks": comm.size,
           "threads": int(os.environ.get("OMP_NUM_THREADS", "1")), "ordering": ordering,
           "host": platform.node()}
    lndet = {}
    for name, atoms in (("defect", defect), ("bulk", bulk)):
        comm.Barrier()
        t0 = time.perf_counter()
        dh = assemble_hessian(comm, atoms, pot)
        t1 = time.perf_counter()
        pd = log_pseudo_determinant(dh, ordering=ordering)
        t2 = time.perf_counter()
        lndet[name] = pd.ln_det_prime
        out[f"{name}_assembly_s"] = t1 - t0
        out[f"{name}_factor_s"] = t2 - t1
        out[f"{name}_n_negative"] = pd.n_negative
        out["mumps_mb_max_rank"] = max(out.get("mumps_mb_max_rank", 0), pd.factorisation.memory_mb_max)
        out["ordering_used"] = pd.factorisation.ordering
        if dense and (name == "defect" or dense > 1) and comm.rank == 0:
            D = dh.gather_scipy(mass_weighted=True).toarray()
            t3 = time.perf_counter()
            ev = scipy.linalg.eigvalsh(D, overwrite_a=True, check_finite=False)
            out[f"{name}_dense_s"] = time.perf_counter() - t3
            out[f"{name}_ln_det_dense"] = float(np.sum(np.log(without_zero_modes(ev))))
            del D
        elif dense and (name == "defect" or dense > 1):
            dh.gather_scipy(mass_weighted=True)
        del dh
    s_f, _ = formation_entropy(lndet["defect"], len(defect), lndet["bulk"], len(bulk))
    out["S_f_kB"] = s_f
    out["ln_det_defect"] = lndet["defect"]
    out["exact_s"] = sum(out[f"{k}_assembly_s"] + out[f"{k}_factor_s"] for k in ("defect", "bulk"))
    if dense > 1 and comm.rank == 0:
        s_dense, _ = formation_entropy(out["defect_ln_det_dense"], len(defect), out["bulk_ln_det_dense"], len(bulk))
        out["S_f_dense_kB"] = s_dense
        out["S_f_abs_diff"] = abs(s_f - s_dense)
    if dense and comm.rank == 0:
        out["ln_det_rel_diff"] = abs(out["defect_ln_det_dense"] - lndet["defect"]) / abs(lndet["defect"])
        out["speedup_defect"] = out["defect_dense_s"] / (out["defect_assembly_s"] + out["defect_factor_s"])
    out["peak_mb_per_rank"] = comm.allreduce(_util.peak_rss_mb(), op=MPI.MAX)
    if comm.rank == 0:
        print(json.dumps(out))


def fit_power(x, y):
    """Exponent b and prefactor a of y = a x^b (least squares in log-log)."""
    b, log_a = np.polyfit(np.log(x), np.log(y), 1)
    return float(np.exp(log_a)), float(b)


def table(rows) -> str:
    lines = ["| atoms | ranks×threads | ordering | exact S_f, 2 cells (s) | defect: assembly + factor (s) | MUMPS MB/rank | peak MB/rank | defect dense eigvalsh (s) | speed-up (defect cell) | rel. diff ln det' | S_f (k_B) | abs diff S_f vs dense |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["atoms"], r["ranks"], r["threads"], r["ordering"])):
        dense = f"{r['defect_dense_s']:.1f}" if "defect_dense_s" in r else "–"
        speed = f"{r['speedup_defect']:.0f}×" if "speedup_defect" in r else "–"
        rel = f"{r['ln_det_rel_diff']:.1e}" if "ln_det_rel_diff" in r else "–"
        diff = f"{r['S_f_abs_diff']:.1e}" if "S_f_abs_diff" in r else "–"
        lines.append(f"| {r['atoms']} | {r['ranks']}×{r['threads']} | {r['ordering_used']} | {r['exact_s']:.2f} | "
                     f"{r['defect_assembly_s'] + r['defect_factor_s']:.2f} | {r['mumps_mb_max_rank']} | "
                     f"{r['peak_mb_per_rank']:.0f} | {dense} | {speed} | {rel} | {r['S_f_kB']:.6f} | {diff} |")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    configs = sorted({(r["ranks"], r["threads"]) for r in rows if r["ordering"] == "auto"})
    for p, t in configs:
        sel = sorted([r for r in rows if (r["ranks"], r["threads"]) == (p, t) and r["ordering"] == "auto"],
                     key=lambda r: r["atoms"])
        if sel:
            ax.loglog([r["atoms"] for r in sel], [r["exact_s"] for r in sel], "o-", label=f"exact S_f, {p} rank × {t} thr")
    dense = sorted([r for r in rows if "defect_dense_s" in r], key=lambda r: r["atoms"])
    if dense:
        x = np.array([r["atoms"] for r in dense], float)
        y = np.array([2 * r["defect_dense_s"] for r in dense])
        ax.loglog(x, y, "s", color="k", label="dense eigvalsh (2 cells, 2 threads)")
        a, b = fit_power(x, y)
        xs = np.geomspace(x.min(), 130000, 50)
        ax.loglog(xs, a * xs ** b, "k--", lw=0.8, label=f"dense fit ∝ N^{b:.2f}")
    ax.set_xlabel("atoms")
    ax.set_ylabel("wall time (s)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 12, 16, 20])
    ap.add_argument("--configs", nargs="+", default=["1x1", "1x2", "2x1"], help="RANKSxTHREADS")
    ap.add_argument("--orderings", nargs="+", default=["auto"])
    ap.add_argument("--dense-max", type=int, default=16, help="largest n whose defect cell is also diagonalised densely")
    ap.add_argument("--dense-both-max", type=int, default=12, help="largest n whose two cells are diagonalised (dense S_f)")
    ap.add_argument("--dense-config", default="1x2", help="configuration that runs the dense reference")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if args.worker:
        worker(int(args.worker[0]), args.worker[1], int(args.worker[2]))
        return
    if not args.table:
        for n in args.sizes:
            relaxed_vacancy(n)
            for cfg in args.configs:
                p, t = (int(v) for v in cfg.split("x"))
                for ordering in args.orderings:
                    dense = 0
                    if cfg == args.dense_config and ordering == args.orderings[0] and n <= args.dense_max:
                        dense = 2 if n <= args.dense_both_max else 1
                    row = _util.run_worker(__file__, [n, ordering, dense], ranks=p, threads=t)
                    _util.append_result(RESULTS, row)
                    print(json.dumps(row), flush=True)
    rows = _util.read_results(RESULTS)
    print(table(rows))
    if rows:
        plot(rows, os.path.join(HERE, "thermo_scaling.png"))
        dense = [r for r in rows if "defect_dense_s" in r and r["atoms"] >= 1000]
        if len(dense) >= 2:
            a, b = fit_power([r["atoms"] for r in dense], [r["defect_dense_s"] for r in dense])
            print(f"\ndense eigvalsh of one cell (1 rank x 2 threads), fit over N >= 1000: t = {a:.3e} N^{b:.2f} s "
                  f"-> 16 000 atoms: {a * 16000 ** b:.0f} s, 128 000 atoms: {a * 128000 ** b:.3g} s")
        for cfg in sorted({(r['ranks'], r['threads']) for r in rows}):
            sel = [r for r in rows if (r['ranks'], r['threads']) == cfg and r['ordering'] == 'auto']
            if len(sel) >= 2:
                a, b = fit_power([r["atoms"] for r in sel], [r["exact_s"] for r in sel])
                am, bm = fit_power([r["atoms"] for r in sel], [r["peak_mb_per_rank"] for r in sel])
                print(f"exact {cfg[0]}x{cfg[1]}: t ∝ N^{b:.2f} (128 000 atoms: {a * 128000 ** b:.3g} s), "
                      f"memory ∝ N^{bm:.2f} (128 000 atoms: {am * 128000 ** bm / 1024:.1f} GB/rank)")


if __name__ == "__main__":
    main()
