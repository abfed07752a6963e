"""Benchmark: exact ln det' of (n a0)³ Fe cells with one vacancy, by route, and the memory each
route's symbolic analysis predicts — the law that decides what fits on a machine.

    python bench/memory_routes.py --analyse 8 12 16 20 24 28 32 40   # estimates only (cheap)
    python bench/memory_routes.py --factor 8 12 16 20 24              # factorisations, 2 threads
    python bench/memory_routes.py --thermo 28                          # hpcvib thermo end to end
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

    from hpcvib.geometry.structures import bcc_supercell
    from hpcvib.linalg.hessian import assemble_hessian
    from hpcvib.linalg.spectral import _pinned_matrix as pinned
    from hpcvib.potentials import lattice_constant, load_potential

    pot = load_potential("Fe_mm")
    atoms = bcc_supercell(n, lattice_constant(pot))
    del atoms[0]
    t0 = time.perf_counter()
    dh = assemble_hessian(MPI.COMM_SELF, atoms, pot)
    D = pinned(dh, 0)
    return len(atoms), D, time.perf_counter() - t0


def worker(mode: str, route: str, n: int) -> None:
    from hpcvib.linalg.solvers import cholmod, mumps_seq

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


def thermo_end_to_end(n: int, threads: int) -> dict:
    """Relax a vacancy in an (n a0)³ cell (FIRE to 1e-4 eV/Å), then `hpcvib thermo CELL -p Fe_mm
    --reference auto --json` under /usr/bin/time -v: wall time, peak memory, route, S_f."""
    import subprocess
    import tempfile

    import ase.io

    from hpcvib.geometry.structures import bcc_supercell
    from hpcvib.landscape.exact_minimum import fire
    from hpcvib.potentials import lattice_constant, load_potential

    pot = load_potential("Fe_mm")
    atoms = bcc_supercell(n, lattice_constant(pot))
    del atoms[0]
    t0 = time.perf_counter()
    converged, calls = fire(atoms, pot, 1e-4, 20000)
    relax_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as folder:
        cell = os.path.join(folder, f"vacancy{n}.extxyz")
        ase.io.write(cell, atoms)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(threads)
        proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "hpcvib.cli.commands", "thermo", cell, "-p", "Fe_mm",
                               "--reference", "auto", "--json"], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_kb = int(next(line.split()[-1] for line in proc.stderr.splitlines() if "Maximum resident" in line))
    wall = next(line.split()[-1] for line in proc.stderr.splitlines() if "Elapsed (wall clock)" in line)
    fac = out["factorisation"]
    return {"n": n, "atoms": len(atoms), "mode": "thermo", "route": fac["solver"], "threads": threads,
            "relax_force_calls": calls, "relax_s": relax_s, "relax_converged": converged, "wall": wall,
            "factor_s": fac.get("seconds"), "peak_rss_mb": peak_kb / 1024, "S_f_kB": out["S_f_kB"],
            "ln_det_prime": out["ln_det_prime"], "estimated_mb": fac.get("estimated_mb"), "gflop": 0.0,
            "analyse_s": 0.0, "host": platform.node(), "cpus": os.cpu_count()}


def table(rows) -> str:
    lines = ["| n | atoms | route | mode | estimate (MB) | Gflop | analyse (s) | factor (s) | peak RSS (MB) | ln det D_(-k) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["mode"] != "thermo"), key=lambda r: (r["atoms"], r["route"], r["mode"])):
        lines.append(f"| {r['n']} | {r['atoms']} | {r['route']} | {r['mode']} | {r['estimated_mb']} | "
                     f"{r['gflop']:.0f} | {r['analyse_s']:.1f} | {r.get('factor_s', float('nan')):.1f} | "
                     f"{r['peak_rss_mb']:.0f} | {r.get('ln_det', float('nan')):.6f} |")
    thermo = [r for r in rows if r["mode"] == "thermo"]
    if thermo:
        lines += ["", "| n | atoms | `hpcvib thermo --reference auto` | route | factorisation (s) | wall | peak RSS (MB) | S_f (k_B) |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['n']} | {r['atoms']} | {r['threads']} thread(s) | {r['route']} | {r['factor_s']:.0f} | "
                  f"{r['wall']} | {r['peak_rss_mb']:.0f} | {r['S_f_kB']:.4f} |" for r in thermo]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--analyse", type=int, nargs="*", default=[], metavar="N")
    ap.add_argument("--factor", type=int, nargs="*", default=[], metavar="N")
    ap.add_argument("--thermo", type=int, nargs="*", default=[], metavar="N")
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
    for n in args.thermo:
        row = thermo_end_to_end(n, args.threads)
        _util.append_result(RESULTS, row)
        print(json.dumps(row), flush=True)
    print(table(_util.read_results(RESULTS)))


if __name__ == "__main__":
    main()
