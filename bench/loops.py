"""Benchmark: prismatic ½<111> self-interstitial loops — build and relax (Newton–CG, O(N) memory),
exact S_f where the factorisation fits, the built-in surrogate's S_f everywhere — and the lowest
vibrational modes without factorising, by cell size and rank count. Everything runs through the
command line, as a user would, under /usr/bin/time -v (wall time, peak memory).

    python bench/loops.py --loops 20:16 50:20 100:24 200:40   # SIZE:CELL (cell in a0)
    python bench/loops.py --modes 20 30 40 --ranks 1 2          # vacancy cells (n a0)^3
    python bench/loops.py --table

Structures go to ~/hpcvib-runs/loops/ (``--work``); one JSON line per measurement to
bench/results/loops.jsonl. The paper's reference (Sec. I): the exact S_f of a 200-SIA loop in a
cell of more than 120 000 atoms took "6 hours on 3000 modern CPUs" (18 000 CPU-hours).
"""

import argparse
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "loops.jsonl")
PAPER_CPU_HOURS = 18000.0


def timed(args: list, ranks: int = 1, threads: int = 2, timeout: int = 7200) -> dict:
    """Run ``hpcvib ARGS`` under /usr/bin/time -v: exit status, last JSON line (or None), wall
    seconds, peak RSS (MB, the largest rank), last line of stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, "-m", "hpcvib.cli.commands"] + [str(a) for a in args]
    if ranks > 1:
        import shutil

        flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
        cmd = [shutil.which("mpiexec"), *flags, "-n", str(ranks)] + cmd
    proc = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, env=env, timeout=timeout)
    err = proc.stderr.splitlines()
    peak_kb = int(next(line.split()[-1] for line in err if "Maximum resident" in line))
    wall = next(line.split()[-1] for line in err if "Elapsed (wall clock)" in line)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    message = next((line for line in err if line.startswith("hpcvib: error")), "")
    return {"rc": proc.returncode, "json": json.loads(lines[-1]) if lines else None, "wall_s": seconds,
            "peak_rss_mb": peak_kb / 1024, "message": message}


def loop_row(size: int, cell: int, work: str, exact: bool) -> dict:
    path = os.path.join(work, f"loop{size}_{cell}.extxyz")
    row = {"kind": "loop", "size": size, "cell": cell, "host": platform.node(), "cpus": os.cpu_count()}
    record = path + ".build.json"  # a structure built before (the 15-min 128 000-atom build) is reused
    if os.path.exists(path) and os.path.exists(record):
        with open(record) as fh:
            build = json.load(fh)
    else:
        build = timed(["build", "--cell", cell, "--loop", size, "-p", "Fe_mm", "--relax", "-o", path, "--json"])
        if build["rc"] != 0:
            raise RuntimeError(f"build failed: {build['message']}")
        with open(record, "w") as fh:
            json.dump(build, fh)
    b = build["json"]
    row.update(atoms=b["n_atoms"], build_s=build["wall_s"], build_peak_mb=build["peak_rss_mb"],
               is_minimum=b["is_minimum"], lowest=b["lowest_eigenvalues"], newton_steps=b["newton_steps"],
               force_calls=b["force_calls"], escapes=b.get("escapes", 0), max_force=b["max_force_eV_A"])
    pred = timed(["predict", "Fe_mm-Sf-linear", path, "-p", "Fe_mm", "--json"])
    if pred["rc"] != 0:
        raise RuntimeError(f"predict failed: {pred['message']}")
    row.update(S_f_predicted=pred["json"]["S_f_kB"], S_f_sigma=pred["json"].get("S_f_std_kB"),
               predict_s=pred["wall_s"], predict_peak_mb=pred["peak_rss_mb"])
    if exact:
        thermo = timed(["thermo", path, "-p", "Fe_mm", "--reference", "auto", "--json"])
        row.update(thermo_rc=thermo["rc"], thermo_s=thermo["wall_s"], thermo_peak_mb=thermo["peak_rss_mb"])
        if thermo["rc"] == 0:
            fac = thermo["json"]["factorisation"]
            row.update(S_f_exact=thermo["json"]["S_f_kB"], solver=fac["solver"], factor_s=fac["seconds"],
                       n_negative=thermo["json"]["n_negative"])
        else:
            row.update(thermo_message=thermo["message"])
    return row


def modes_row(n: int, ranks: int, route: str, work: str) -> dict:
    """Lowest 6 modes of a relaxed (n a0)³ vacancy cell (FIRE to 1e-3 eV/Å; built once)."""
    import ase.io

    path = os.path.join(work, f"vacancy{n}.extxyz")
    if not os.path.exists(path):
        from hpcvib.geometry.structures import bcc_supercell
        from hpcvib.landscape.exact_minimum import fire
        from hpcvib.potentials import lattice_constant, load_potential

        pot = load_potential("Fe_mm")
        atoms = bcc_supercell(n, lattice_constant(pot))
        del atoms[0]
        fire(atoms, pot, 1e-3, 20000)
        ase.io.write(path, atoms)
    res = timed(["modes", path, "-p", "Fe_mm", "-k", 6, "--route", route, "--json"], ranks=ranks,
                threads=2 if ranks == 1 else 1)
    row = {"kind": "modes", "n": n, "ranks": ranks, "route": route, "wall_s": res["wall_s"],
           "peak_rss_mb": res["peak_rss_mb"], "rc": res["rc"], "host": platform.node()}
    if res["rc"] == 0:
        out = res["json"]
        row.update(atoms=out["n_atoms"], solve_s=out["seconds"], iterations=out["iterations"],
                   eigenvalues=out["eigenvalues"], max_residual=max(out["residuals"]))
    else:
        row["message"] = res["message"]
    return row


def _latest(rows, key) -> list:
    """The last measurement of each ``key(row)`` (a point measured again replaces the older one)."""
    return list({key(r): r for r in rows}.values())


def table(rows) -> str:
    loops = _latest([r for r in rows if r["kind"] == "loop"], lambda r: (r["size"], r["cell"]))
    lines = ["| SIAs | cell | atoms | build + relax (s) | peak (MB) | minimum (λ₁ beyond translations) | "
             "S_f exact (k_B) | exact wall (s) | exact peak (MB) | S_f surrogate (k_B) | surrogate wall (s) | "
             "surrogate − exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(loops, key=lambda r: r["atoms"]):
        exact = r.get("S_f_exact")
        lam = sorted(r["lowest"], key=abs)[3:]
        lines.append(
            f"| {r['size']} | {r['cell']}³ | {r['atoms']} | {r['build_s']:.0f} | {r['build_peak_mb']:.0f} | "
            f"{'yes' if r['is_minimum'] else 'NO'} ({min(lam):.3g})"
            + (f"; exact inertia {r['n_negative']}" if "n_negative" in r else "") + " | "
            + (f"{exact:.2f} | {r['thermo_s']:.0f} | {r['thermo_peak_mb']:.0f} | " if exact is not None
               else ("refused: memory | — | — | " if r.get("thermo_rc") == 2 else "not run | — | — | "))
            + f"{r['S_f_predicted']:.2f} ± {r['S_f_sigma'] or float('nan'):.2f} | {r['predict_s']:.0f} | "
            + (f"{r['S_f_predicted'] - exact:+.2f} ({100 * (r['S_f_predicted'] - exact) / exact:+.1f} %) |"
               if exact is not None else "— |"))
    modes = _latest([r for r in rows if r["kind"] == "modes"], lambda r: (r["n"], r["ranks"], r["route"]))
    if modes:
        lines += ["", "| cell | atoms | ranks × threads | route | eigensolve (s) | iterations | wall (s) | "
                  "peak RSS (MB, per rank) | λ₄ (eV/(Å² amu)) | max residual |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(modes, key=lambda r: (r["n"], r["route"], r["ranks"])):
            if r["rc"] != 0:
                lines.append(f"| {r['n']}³ | — | {r['ranks']} × {2 if r['ranks'] == 1 else 1} | {r['route']} | "
                             f"failed: {r['message'][:80]} | | {r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} | | |")
                continue
            lines.append(f"| {r['n']}³ | {r['atoms']} | {r['ranks']} × {2 if r['ranks'] == 1 else 1} | {r['route']} | "
                         f"{r['solve_s']:.1f} | {r['iterations']} | {r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} | "
                         f"{sorted(r['eigenvalues'])[3]:.6e} | {r['max_residual']:.1e} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loops", nargs="*", default=[], metavar="SIZE:CELL")
    ap.add_argument("--no-exact", action="store_true", help="skip the exact thermo runs")
    ap.add_argument("--modes", type=int, nargs="*", default=[], metavar="N")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--routes", nargs="+", default=["preconditioned"])
    ap.add_argument("--work", default=os.path.expanduser("~/hpcvib-runs/loops"))
    ap.add_argument("--table", action="store_true", help="only print the table of stored results")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    for spec in args.loops:
        size, cell = (int(x) for x in spec.split(":"))
        row = loop_row(size, cell, args.work, not args.no_exact)
        _util.append_result(RESULTS, row)
        print(json.dumps(row), flush=True)
    for n in args.modes:
        for route in args.routes:
            for ranks in args.ranks:
                row = modes_row(n, ranks, route, args.work)
                _util.append_result(RESULTS, row)
                print(json.dumps(row), flush=True)
    print(table(_util.read_results(RESULTS)))


if __name__ == "__main__":
    main()
