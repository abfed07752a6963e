"""Benchmark: exact formation entropy S_f of a relaxed vacancy in bcc Fe (Fe_mm), 2 n³ cells.

    python bench/thermo.py --sizes 8 12 16 20 --configs 1x2 1x1 --solvers cholmod mumps --dense-max 16
    python bench/thermo.py --sizes 8 12 16 --configs 2x1 --solvers mumps --dense-max 0
    python bench/thermo.py --sizes 26 --configs 1x2 --solvers cholmod --dense-max 0
    python bench/thermo.py --orderings amd amf qamd pord --sizes 12 16 --configs 1x2 --solvers mumps
    python bench/thermo.py --table            # table + log-log plot from stored results

A configuration ``PxT`` is P MPI ranks with T BLAS/OpenMP threads each. Each run factors D_(-k)
of the defect cell and of the perfect cell (CHOLMOD supernodal Cholesky with nested dissection,
or MUMPS LDLᵀ; determinant and inertia), and for sizes up to --dense-max also diagonalises the
defect cell (both cells up to --dense-both-max) densely (LAPACK eigvalsh) to give the agreement
and the speed-up measured side by side. Relaxed structures are cached in bench/cache/ (not
committed). ``results/thermo_full_pattern.jsonl`` holds the earlier runs whose Hessian pattern
still stored the identically-zero blocks beyond the EAM density support (339 instead of 149
blocks per row).
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

    from hpcvib.geometry.structures import bcc_supercell
    from hpcvib.potentials import lattice_constant, load_potential
    from hpcvib.potentials.calculator import HpcvibCalculator

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


def worker(n: int, ordering: str, dense: int, solver: str) -> None:
    import ase.io
    import scipy.linalg
    from mpi4py import MPI

    from hpcvib.linalg.hessian import assemble_hessian
    from hpcvib.linalg.spectral import log_pseudo_determinant
    from hpcvib.physics.thermo import formation_entropy, perfect_cubic_reference, without_zero_modes
    from hpcvib.potentials import load_potential

    comm = MPI.COMM_WORLD
    pot = load_potential("Fe_mm")
    defect = ase.io.read(os.path.join(CACHE, f"fe_vacancy_{n}.extxyz"), parallel=False)
    bulk = perfect_cubic_reference(defect)
    out = {"n": n, "atoms": len(defect), "dof": 3 * len(defect), "ranks": comm.size,
           "threads": int(os.environ.get("OMP_NUM_THREADS", "1")), "ordering": ordering,
           "solver": solver, "host": platform.node()}
    lndet = {}
    for name, atoms in (("defect", defect), ("bulk", bulk)):
        comm.Barrier()
        t0 = time.perf_counter()
        dh = assemble_hessian(comm, atoms, pot)
        t1 = time.perf_counter()
        pd = log_pseudo_determinant(dh, ordering=ordering, solver=solver)
        t2 = time.perf_counter()
        lndet[name] = pd.ln_det_prime
        out[f"{name}_assembly_s"] = t1 - t0
        out[f"{name}_factor_s"] = t2 - t1
        out[f"{name}_n_negative"] = pd.n_negative
        out["factor_mb_max_rank"] = max(out.get("factor_mb_max_rank", 0), pd.factorisation.memory_mb_max)
        out["ordering_used"] = pd.factorisation.ordering
        out["solver_used"] = pd.factorisation.solver
        out[f"{name}_blocks_per_row"] = dh.rows.nnz_blocks / dh.layout.n_owned if comm.size == 1 else None
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
    # the perfect cell again, as `hpcvib thermo --reference auto` computes it: Bloch sums, O(N)
    from hpcvib.physics.thermo import bloch_ln_det_prime

    t0 = time.perf_counter()
    ln_bloch, _ = bloch_ln_det_prime(pot, bulk)
    out["bulk_bloch_s"] = time.perf_counter() - t0
    out["bloch_rel_diff"] = abs(ln_bloch - lndet["bulk"]) / abs(lndet["bulk"])
    out["exact_bloch_s"] = out["defect_assembly_s"] + out["defect_factor_s"] + out["bulk_bloch_s"]
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
    lines = ["| atoms | ranks×threads | solver | ordering | exact S_f, 2 cells (s) | defect: assembly + factor (s) | S_f, defect + Bloch bulk (s) | factor MB/rank | peak MB/rank | defect dense eigvalsh (s) | speed-up (defect cell) | rel. diff ln det' | S_f (k_B) | abs diff S_f vs dense |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["atoms"], r["ranks"], r["threads"], r["solver_used"], r["ordering"])):
        dense = f"{r['defect_dense_s']:.1f}" if "defect_dense_s" in r else "–"
        speed = f"{r['speedup_defect']:.0f}×" if "speedup_defect" in r else "–"
        rel = f"{r['ln_det_rel_diff']:.1e}" if "ln_det_rel_diff" in r else "–"
        diff = f"{r['S_f_abs_diff']:.1e}" if "S_f_abs_diff" in r else "–"
        bloch = f"{r['exact_bloch_s']:.2f}" if "exact_bloch_s" in r else "–"
        lines.append(f"| {r['atoms']} | {r['ranks']}×{r['threads']} | {r['solver_used']} | {r['ordering_used']} | {r['exact_s']:.2f} | "
                     f"{r['defect_assembly_s'] + r['defect_factor_s']:.2f} | {bloch} | "
                     f"{r['factor_mb_max_rank']} | "
                     f"{r['peak_mb_per_rank']:.0f} | {dense} | {speed} | {rel} | {r['S_f_kB']:.6f} | {diff} |")
    return "\n".join(lines)


def _series(rows):
    """(ranks, threads, solver) of the default-ordering runs."""
    return sorted({(r["ranks"], r["threads"], r["solver_used"]) for r in rows if r["ordering"] == "auto"})


def _select(rows, p, t, solver):
    return sorted([r for r in rows if (r["ranks"], r["threads"], r["solver_used"]) == (p, t, solver)
                   and r["ordering"] == "auto"], key=lambda r: r["atoms"])


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for p, t, solver in _series(rows):
        sel = _select(rows, p, t, solver)
        if sel:
            ax.loglog([r["atoms"] for r in sel], [r["exact_s"] for r in sel], "o-",
                      label=f"exact S_f, {solver}, {p} rank × {t} thr")
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
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 12, 16, 20])
    ap.add_argument("--configs", nargs="+", default=["1x1", "1x2", "2x1"], help="RANKSxTHREADS")
    ap.add_argument("--orderings", nargs="+", default=["auto"])
    ap.add_argument("--solvers", nargs="+", default=["cholmod", "mumps"], choices=["cholmod", "mumps"])
    ap.add_argument("--dense-max", type=int, default=16, help="largest n whose defect cell is also diagonalised densely")
    ap.add_argument("--dense-both-max", type=int, default=12, help="largest n whose two cells are diagonalised (dense S_f)")
    ap.add_argument("--dense-config", default="1x2", help="configuration that runs the dense reference")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if args.worker:
        worker(int(args.worker[0]), args.worker[1], int(args.worker[2]), args.worker[3])
        return
    if not args.table:
        for n in args.sizes:
            relaxed_vacancy(n)
            for cfg in args.configs:
                p, t = (int(v) for v in cfg.split("x"))
                for solver in args.solvers:
                    if solver == "cholmod" and p > 1:
                        continue  # one-process backend
                    for ordering in args.orderings:
                        dense = 0
                        first = ordering == args.orderings[0] and solver == args.solvers[0]
                        if cfg == args.dense_config and first and n <= args.dense_max:
                            dense = 2 if n <= args.dense_both_max else 1
                        row = _util.run_worker(__file__, [n, ordering, dense, solver], ranks=p, threads=t)
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
        for p, t, solver in _series(rows):
            sel = [r for r in _select(rows, p, t, solver) if r["atoms"] >= 3000]
            if len(sel) >= 2:
                a, b = fit_power([r["atoms"] for r in sel], [r["exact_s"] for r in sel])
                am, bm = fit_power([r["atoms"] for r in sel], [r["factor_mb_max_rank"] for r in sel])
                print(f"exact S_f {solver} {p}x{t}, fit over N >= 3000: t ∝ N^{b:.2f} (128 000 atoms: "
                      f"{a * 128000 ** b:.3g} s), factor memory ∝ N^{bm:.2f} (128 000 atoms: "
                      f"{am * 128000 ** bm / 1024:.1f} GB/rank)")


if __name__ == "__main__":
    main()
