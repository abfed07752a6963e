"""Benchmark: how far exactness holds with MUMPS block low-rank (BLR) factorisation.

    python bench/blr.py --sizes 16 20 --eps 0 1e-12 1e-10 1e-8 1e-6
    python bench/blr.py --table

ln det'(D) of the relaxed (n a0)³ Fe vacancy cell (bench/cache, made by bench/thermo.py) by one
MUMPS LDLᵀ factorisation (1 rank × 2 threads, PORD) with BLR compression of the factor blocks
(ICNTL(35) = 2, dropping tolerance CNTL(7) = ε); ε = 0 is the exact full-rank factorisation.
The same options work from the command line:
``hpcvib --petsc-options "-hpcvib_det_mat_mumps_icntl_35 2 -hpcvib_det_mat_mumps_cntl_7 1e-8"
thermo ... --solver mumps``. The error of ln det' is also given as the error it makes in S_f
(½ |Δ ln det'|, k_B).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "blr.jsonl")
CACHE = os.path.join(HERE, "cache")


def worker(n: int, eps: float) -> None:
    import ase.io
    from mpi4py import MPI

    from hpcvib.linalg.hessian import assemble_hessian
    from hpcvib.linalg.petsc_env import init_petsc
    from hpcvib.linalg.spectral import log_pseudo_determinant

    comm = MPI.COMM_WORLD
    if eps > 0:
        opts = init_petsc().Options("hpcvib_det_")
        opts["mat_mumps_icntl_35"] = 2
        opts["mat_mumps_cntl_7"] = eps
    atoms = ase.io.read(os.path.join(CACHE, f"fe_vacancy_{n}.extxyz"), parallel=False)
    dh = assemble_hessian(comm, atoms, "Fe_mm")
    t0 = time.perf_counter()
    pd = log_pseudo_determinant(dh, solver="mumps")
    out = {"n": n, "atoms": len(atoms), "eps": eps, "ranks": comm.size,
           "threads": int(os.environ.get("OMP_NUM_THREADS", "1")), "seconds": time.perf_counter() - t0,
           "mumps_mb": pd.factorisation.memory_mb_max, "ln_det_prime": pd.ln_det_prime,
           "n_negative": pd.n_negative, "peak_mb": _util.peak_rss_mb()}
    if comm.rank == 0:
        print(json.dumps(out))


def table(rows) -> str:
    exact = {r["n"]: r["ln_det_prime"] for r in rows if r["eps"] == 0}
    lines = ["| atoms | BLR ε | factorisation (s) | MUMPS MB | ln det'(D) | rel. error | error in S_f (k_B) | inertia |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["atoms"], r["eps"])):
        ref = exact.get(r["n"])
        rel = f"{abs(r['ln_det_prime'] - ref) / abs(ref):.1e}" if ref is not None else "–"
        ds = f"{0.5 * abs(r['ln_det_prime'] - ref):.1e}" if ref is not None else "–"
        eps = "exact" if r["eps"] == 0 else f"{r['eps']:g}"
        lines.append(f"| {r['atoms']} | {eps} | {r['seconds']:.1f} | {r['mumps_mb']} | "
                     f"{r['ln_det_prime']:.10f} | {rel} | {ds} | {r['n_negative']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 20])
    ap.add_argument("--eps", type=float, nargs="+", default=[0.0, 1e-12, 1e-10, 1e-8, 1e-6])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if args.worker:
        worker(int(args.worker[0]), float(args.worker[1]))
        return
    if not args.table:
        for n in args.sizes:
            if not os.path.exists(os.path.join(CACHE, f"fe_vacancy_{n}.extxyz")):
                sys.exit(f"bench/cache/fe_vacancy_{n}.extxyz missing: run bench/thermo.py --sizes {n} first")
            for eps in args.eps:
                row = _util.run_worker(__file__, [n, eps], ranks=1, threads=args.threads)
                _util.append_result(RESULTS, row)
                print(json.dumps(row), flush=True)
    print(table(_util.read_results(RESULTS)))


if __name__ == "__main__":
    main()
