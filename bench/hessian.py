"""Benchmark: distributed Hessian assembly for bcc Fe (Fe_mm) cells of 2 n³ atoms.

    python bench/hessian.py                 # n = 8 12 16 20 25 30, 1 and 2 ranks
    python bench/hessian.py --sizes 8 20 --ranks 1 2
    python bench/hessian.py --table         # rewrite the table from bench/results/hessian.jsonl

Times: neighbour lists + block rows (numba, per rank), PETSc MPIBAIJ creation with exact
preallocation; peak memory is the maximum over ranks. Not a timed test: numbers go to
bench/results/hessian.jsonl and the table in bench/README.md.
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
RESULTS = os.path.join(HERE, "results", "hessian.jsonl")


def worker(n: int) -> None:
    from mpi4py import MPI

    from hpcvib.geometry.structures import bcc_supercell
    from hpcvib.linalg.hessian import assemble_hessian
    from hpcvib.potentials import lattice_constant, load_potential

    comm = MPI.COMM_WORLD
    pot = load_potential("Fe_mm")
    atoms = bcc_supercell(n, lattice_constant(pot))
    del atoms[0]
    # warm-up on a tiny cell so numba's (cached) compilation is not timed
    assemble_hessian(comm, bcc_supercell(2, 2.8553), pot).petsc_matrix().destroy()
    comm.Barrier()
    t0 = time.perf_counter()
    dh = assemble_hessian(comm, atoms, pot)
    comm.Barrier()
    t1 = time.perf_counter()
    mat = dh.petsc_matrix(mass_weighted=True)
    comm.Barrier()
    t2 = time.perf_counter()
    nnzb = comm.allreduce(dh.rows.nnz_blocks)
    mem = comm.allreduce(_util.peak_rss_mb(), op=MPI.MAX)
    mat.destroy()
    if comm.rank == 0:
        print(json.dumps({"n": n, "atoms": len(atoms), "ranks": comm.size, "rows_s": t1 - t0,
                          "petsc_s": t2 - t1, "total_s": t2 - t0, "blocks": nnzb,
                          "blocks_per_row": nnzb / len(atoms), "peak_mb_per_rank": mem,
                          "host": platform.node(), "cpus": os.cpu_count()}))


def table(rows) -> str:
    lines = ["| n | atoms | ranks | rows (s) | PETSc (s) | total (s) | blocks/row | peak MB/rank |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["atoms"], r["ranks"])):
        lines.append(f"| {r['n']} | {r['atoms']} | {r['ranks']} | {r['rows_s']:.2f} | {r['petsc_s']:.2f} | "
                     f"{r['total_s']:.2f} | {r['blocks_per_row']:.0f} | {r['peak_mb_per_rank']:.0f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 12, 16, 20, 25, 30])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--table", action="store_true", help="only print the table of stored results")
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return
    if not args.table:
        for n in args.sizes:
            for p in args.ranks:
                row = _util.run_worker(__file__, [n], ranks=p, threads=1)
                _util.append_result(RESULTS, row)
                print(json.dumps(row), flush=True)
    print(table(_util.read_results(RESULTS)))


if __name__ == "__main__":
    main()
