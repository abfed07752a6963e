"""Scaling study: strong and weak scaling of hpcvib's phases over MPI ranks × threads per rank.

    python bench/scaling.py --sizes 10 16 --ranks 1 2 --threads 1 2          # measure (appends JSON lines)
    python bench/scaling.py --plot                                           # figures + table
    srun / mpiexec: see slurm/scaling.sbatch (one point per job step, any node count)

Each point runs one fresh process group (``mpiexec -n RANKS``, ``OMP/OPENBLAS/NUMBA_NUM_THREADS =
THREADS``) on an (n a0)³ Fe_mm cell with one vacancy and times, in that order:

* ``assembly``     — distributed Hessian block rows and the PETSc matrix (all ranks);
* ``factorisation``— exact ln det'(D) by ``log_pseudo_determinant`` (route ``auto``: CHOLMOD or
  sequential MUMPS-METIS on one rank, PETSc's MUMPS over several);
* ``descriptors``  — bSO(4) sums, atoms split over the ranks and reduced;
* ``farm``         — 4 × ranks independent small-cell thermo tasks (431 atoms each) through the
  task farm (configurations per second: the database's kind of parallelism).

Strong scaling: speed-up T(1 core)/T(p cores) and efficiency at fixed n; weak scaling: cells whose
atom count grows with the cores. Results: ``bench/results/scaling.jsonl``; figures
``bench/scaling_strong.png`` and ``bench/scaling_weak.png``; ``--table`` prints markdown.
What to change on a cluster: the sizes (e.g. 16 24 32 40), ``--ranks`` up to the node's cores,
``--threads`` 1 and the cores per rank you would use, and the launcher (``--launcher srun``).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "scaling.jsonl")
PHASES = ("assembly", "factorisation", "descriptors", "farm")


def worker(n: int) -> None:
    """One point of the study, on MPI.COMM_WORLD; rank 0 prints one JSON line."""
    from mpi4py import MPI

    from hpcvib.geometry.structures import bcc_supercell
    from hpcvib.learning.descriptors import DescriptorSettings, descriptor_sums
    from hpcvib.linalg.hessian import assemble_hessian
    from hpcvib.linalg.spectral import log_pseudo_determinant
    from hpcvib.potentials import lattice_constant, load_potential
    from hpcvib.workflow.farm import run_tasks

    comm = MPI.COMM_WORLD
    pot = load_potential("Fe_mm")
    a0 = lattice_constant(pot)
    atoms = bcc_supercell(n, a0)
    del atoms[0]
    warm = bcc_supercell(3, a0)  # numba compilation (cached) and PETSc start-up are not timed
    log_pseudo_determinant(assemble_hessian(comm, warm, pot))
    descriptor_sums(comm, warm, DescriptorSettings())
    times = {}

    def timed(name, func):
        comm.Barrier()
        t0 = time.perf_counter()
        out = func()
        comm.Barrier()
        times[name] = time.perf_counter() - t0
        return out

    dh = timed("assembly", lambda: assemble_hessian(comm, atoms, pot))
    pd = timed("factorisation", lambda: log_pseudo_determinant(dh))
    timed("descriptors", lambda: descriptor_sums(comm, atoms, DescriptorSettings()))
    small = bcc_supercell(6, a0)
    del small[0]

    def farm():
        def task(group, index):
            log_pseudo_determinant(assemble_hessian(group, small, pot))
        run_tasks(comm, list(range(4 * comm.size)), task, 1, "scaling farm")
    timed("farm", farm)
    if comm.rank == 0:
        print(json.dumps({"n": n, "atoms": len(atoms), "ranks": comm.size,
                          "threads": int(os.environ.get("OPENBLAS_NUM_THREADS", 1)),
                          "seconds": times, "farm_tasks": 4 * comm.size, "solver": pd.factorisation.solver,
                          "ln_det_prime": pd.ln_det_prime, "host": platform.node(), "cpus": os.cpu_count(),
                          "when": time.strftime("%Y-%m-%dT%H:%M:%S")}), flush=True)


def run_point(n: int, ranks: int, threads: int, launcher: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n)]
    if launcher == "srun":
        cmd = ["srun", "-n", str(ranks), f"--cpus-per-task={threads}"] + cmd
    elif ranks > 1 or launcher == "mpiexec":
        flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
        cmd = [shutil.which("mpiexec"), *flags, "-n", str(ranks)] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=4 * 3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def per_task(row: dict, phase: str) -> float:
    """Seconds of one unit of work: the whole phase, or one farm task's share."""
    t = row["seconds"][phase]
    return t / row["farm_tasks"] if phase == "farm" else t


def table(rows: list) -> str:
    lines = ["| atoms | ranks × threads | assembly (s) | factorisation (s) | descriptors (s) | farm (tasks/s) | "
             "speed-up vs 1 × 1 (assembly / factor / descriptors / farm) |", "|---|---|---|---|---|---|---|"]
    base = {r["atoms"]: r for r in rows if r["ranks"] == 1 and r["threads"] == 1}
    for r in sorted(rows, key=lambda r: (r["atoms"], r["ranks"] * r["threads"], r["ranks"])):
        b = base.get(r["atoms"])
        speed = " / ".join(f"{per_task(b, p) / per_task(r, p):.2f}" for p in PHASES) if b else "–"
        s = r["seconds"]
        lines.append(f"| {r['atoms']} | {r['ranks']} × {r['threads']} | {s['assembly']:.2f} | {s['factorisation']:.2f} | "
                     f"{s['descriptors']:.2f} | {r['farm_tasks'] / s['farm']:.2f} | {speed} |")
    return "\n".join(lines)


def plot(rows: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for atoms in sorted({r["atoms"] for r in rows}):
        pts = sorted((r for r in rows if r["atoms"] == atoms), key=lambda r: r["ranks"] * r["threads"])
        base = next((r for r in pts if r["ranks"] == 1 and r["threads"] == 1), None)
        if base is None:
            continue
        for phase, marker in zip(PHASES, "osd^"):
            # two sweeps from 1 × 1: more ranks (1 thread each, solid) and more threads (1 rank, dashed)
            for sweep, style in ((lambda r: r["threads"] == 1, "-"), (lambda r: r["ranks"] == 1, "--")):
                line = [r for r in pts if sweep(r)]
                cores = [r["ranks"] * r["threads"] for r in line]
                speed = [per_task(base, phase) / per_task(r, phase) for r in line]
                label = f"{phase}, {atoms} atoms" + (" (ranks)" if style == "-" else " (threads)")
                color = axes[0].plot(cores, speed, style, marker=marker, label=label)[0].get_color()
                axes[1].plot(cores, [sp / c for sp, c in zip(speed, cores)], style, marker=marker, color=color)
    top = max(r["ranks"] * r["threads"] for r in rows)
    axes[0].plot([1, top], [1, top], "k--", lw=0.8, label="ideal")
    axes[0].set(xlabel="cores (ranks × threads)", ylabel="speed-up", title="strong scaling")
    axes[1].set(xlabel="cores (ranks × threads)", ylabel="parallel efficiency", title="efficiency", ylim=(0, 1.2))
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "scaling_strong.png"), dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    for phase, marker in zip(PHASES, "osd^"):
        pts = sorted(((r["atoms"] / (r["ranks"] * r["threads"]), r) for r in rows), key=lambda x: x[0])
        ax.plot([r["ranks"] * r["threads"] for _, r in pts], [per_task(r, phase) / (r["atoms"] if phase != "farm" else 1)
                                                           for _, r in pts], marker, label=phase)
    ax.set(xlabel="cores", ylabel="seconds per atom (per task for the farm)", yscale="log", title="weak scaling")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "scaling_weak.png"), dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="*", default=[])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--launcher", choices=["auto", "mpiexec", "srun"], default="auto")
    ap.add_argument("--max-cores", type=int, default=os.cpu_count(), help="skip points using more cores")
    ap.add_argument("--plot", action="store_true")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return
    for n in args.sizes:
        for ranks in args.ranks:
            for threads in args.threads:
                if ranks * threads > args.max_cores:
                    continue
                row = run_point(n, ranks, threads, args.launcher)
                _util.append_result(RESULTS, row)
                print(json.dumps(row), flush=True)
    rows = _util.read_results(RESULTS)
    if args.plot and rows:
        plot(rows)
    if args.table or args.plot:
        print(table(rows))


if __name__ == "__main__":
    main()
