"""Benchmark: bSO(4) descriptor throughput (atoms per second per core), jmax = 4.

    python bench/descriptors.py                       # bcc Fe (5 Å) and a-Si-like (3.77 Å), 2 000 … 128 000 atoms
    python bench/descriptors.py --sizes 16000 --ranks 1 2
    python bench/descriptors.py --table

Diagonal (paper, 35 components) and full (LAMMPS list, 55) sets, 1 and 2 ranks (one thread each).
When the LAMMPS peer (.venv-lammps) is installed, ``compute sna/atom`` (twojmax 8, full list) is
timed on the same cell in the same run (its ``run 0``: neighbour list + compute, one process).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import _util  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "descriptors.jsonl")


def make_cell(system: str, atoms_wanted: int):
    from hpcvib.geometry.structures import bcc_supercell, diamond_supercell

    if system == "Fe":
        n = max(2, round((atoms_wanted / 2) ** (1 / 3)))
        atoms = bcc_supercell(n, 2.8553)
    else:
        n = max(1, round((atoms_wanted / 8) ** (1 / 3)))
        atoms = diamond_supercell(n, 5.431 * (2.329 / 2.192) ** (1 / 3))  # a-Si density 2.192 g/cm³
    atoms.positions += np.random.default_rng(0).normal(scale=0.15, size=atoms.positions.shape)
    return atoms


def worker(system: str, atoms_wanted: int, full: int) -> None:
    from mpi4py import MPI

    from hpcvib.learning.descriptors import DescriptorSettings, descriptor_sums

    comm = MPI.COMM_WORLD
    atoms = make_cell(system, atoms_wanted)
    settings = DescriptorSettings(jmax=4, rcut=5.0 if system == "Fe" else 3.77118, full=bool(full))
    descriptor_sums(comm, make_cell(system, 200), settings)  # compile / load numba cache
    comm.Barrier()
    t0 = time.perf_counter()
    descriptor_sums(comm, atoms, settings)
    comm.Barrier()
    seconds = time.perf_counter() - t0
    mem = comm.allreduce(_util.peak_rss_mb(), op=MPI.MAX)
    if comm.rank == 0:
        print(json.dumps({"system": system, "atoms": len(atoms), "set": "full" if full else "diagonal",
                          "components": len(settings.components), "ranks": comm.size, "seconds": seconds,
                          "atoms_per_s_per_core": len(atoms) / seconds / comm.size, "peak_mb_per_rank": mem}))


def lammps_row(system: str, atoms_wanted: int):
    import tempfile

    import lammps_peer

    if not lammps_peer.available():
        return None
    atoms = make_cell(system, atoms_wanted)
    with tempfile.TemporaryDirectory() as tmp:
        _, seconds = lammps_peer.sna_atom(atoms, 5.0 if system == "Fe" else 3.77118, 8, 0.99363, tmp, with_time=True)
    return {"system": system, "atoms": len(atoms), "set": "LAMMPS sna/atom (full, 55)", "components": 55,
            "ranks": 1, "seconds": seconds, "atoms_per_s_per_core": len(atoms) / seconds, "peak_mb_per_rank": None}


def table(rows) -> str:
    lines = ["| system | atoms | set | K | ranks | time (s) | atoms/s/core | peak MB/rank |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["system"], r["atoms"], r["set"], r["ranks"])):
        mem = f"{r['peak_mb_per_rank']:.0f}" if r.get("peak_mb_per_rank") else "–"
        lines.append(f"| {r['system']} | {r['atoms']} | {r['set']} | {r['components']} | {r['ranks']} | "
                     f"{r['seconds']:.2f} | {r['atoms_per_s_per_core']:.0f} | {mem} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--systems", nargs="+", default=["Fe", "Si"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 16000, 128000])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--lammps-only", action="store_true", help="only the LAMMPS sna/atom rows")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), int(args.worker[2]))
        return
    if not args.table:
        for system in args.systems:
            for size in args.sizes:
                for full in (() if args.lammps_only else (0, 1)):
                    for p in args.ranks:
                        row = _util.run_worker(__file__, [system, size, full], ranks=p)
                        _util.append_result(RESULTS, row)
                        print(json.dumps(row), flush=True)
                row = lammps_row(system, size)
                if row:
                    _util.append_result(RESULTS, row)
                    print(json.dumps(row), flush=True)
    print(table(_util.read_results(RESULTS)))


if __name__ == "__main__":
    main()
