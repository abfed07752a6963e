"""Benchmark: exact ln det' of (n a0)³ Fe cells with one vacancy, by route, and the memory each
route's symbolic analysis predicts — the law that decides what fits on a machine.

    python bench/memory_routes.py --analyse 8 12 16 20 24 28 32 40   # estimates only (cheap)
    python bench/memory_routes.py --factor 8 12 16 20 24              # factorisations, 2 threads
    python bench/memory_routes.py --table

Routes: CHOLMOD supernodal Cholesky in core (nested dissection, METIS separators) and
sequential MUMPS 5.2.1 (python-mumps) with METIS, factors discarded (ICNTL(31) = 1). Each
point runs in a fresh process; peak memory is that process's maximum resident set (assembly of
the Hessian included). Results go to bench/results/memory_routes.jsonl and bench/README.md.
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "memory_routes.jsonl")


def _pinned_matrix(n: int):
    from mpi4py import MPI

    from hpcvib.hessian import assemble_hessian
    from hpcvib.potentials import lattice_constant, load_potential
    from hpcvib.spectral import _pinned_matrix as pinned
    from hpcvib.structures import bcc_supercell

    pot = load_potential("Fe_mm")
    atoms = bcc_supercell(n, lattice_constant(pot))
    del atoms[0]
    t0 = time.perf_counter()
    dh = assemble_hessian(MPI.COMM_SELF, atoms, pot)
    D = pinned(dh, 0)
    return len(atoms), D, time.perf_counter() - t0


def worker(mode: str, route: str, n: int) -> None:
    from hpcvib import cholmod, mumps_seq

    atoms, D, assemble_s = _pinned_matrix(n)
    row = {"n": n, "atoms": atoms, "dof": D.shape[0], "route": route, "mode": mode, "assemble_s": assemble_s,
           "host": platform.node(), "cpus": os.cpu_count(), "threads": int(os.environ.get("OPENBLAS_NUM_THREADS", 1))}
    if route == "cholmod":
        r = cholmod.cholesky_logdet(D, memory_limit_mb=0 if mode == "analyse" else None)
        row.update(estimated_mb=r.estimated_mb, gflop=r.gflop, factor_entries=r.factor_entries,
                   analyse_s=r.analyse_seconds)
        if mode == "factor":
            row.update(ln_det=r.ln_det, factor_s=r.factor_seconds)
    else:
        t0 = time.perf_counter()
        with mumps_seq.SequentialMumps(D) as m:
            row.update(estimated_mb=m.estimated_mb, gflop=m.estimated_flops / 1e9,
                       analyse_s=time.perf_counter() - t0)
            if mode == "factor":
                f = m.factor()
                row.update(ln_det=f["ln_abs_det"], factor_s=f["seconds"], used_mb=f["memory_mb"])
    row["peak_rss_mb"] = _util.peak_rss_mb()
    print(json.dumps(row), flush=True)


def table(rows) -> str:
    lines = ["| n | atoms | route | mode | estimate (MB) | Gflop | analyse (s) | factor (s) | peak RSS (MB) | ln det D_(-k) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["atoms"], r["route"], r["mode"])):
        lines.append(f"| {r['n']} | {r['atoms']} | {r['route']} | {r['mode']} | {r['estimated_mb']} | "
                     f"{r['gflop']:.0f} | {r['analyse_s']:.1f} | {r.get('factor_s', float('nan')):.1f} | "
                     f"{r['peak_rss_mb']:.0f} | {r.get('ln_det', float('nan')):.6f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--analyse", type=int, nargs="*", default=[], metavar="N")
    ap.add_argument("--factor", type=int, nargs="*", default=[], metavar="N")
    ap.add_argument("--routes", nargs="+", default=["cholmod", "mumps-metis"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table", action="store_true", help="only print the table of stored results")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    for mode, sizes in (("analyse", args.analyse), ("factor", args.factor)):
        for n in sizes:
            for route in args.routes:
                row = _util.run_worker(__file__, [mode, route, n], threads=args.threads, timeout=4 * 3600)
                _util.append_result(RESULTS, row)
                print(json.dumps(row), flush=True)
    print(table(_util.read_results(RESULTS)))


if __name__ == "__main__":
    main()
