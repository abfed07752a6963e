"""Saddle-search benchmark: ARTn with the exact Hessian (eigenvector-following near the saddle),
plain ARTn steps, and ASE's dimer method from the *same* starting displacements, on a-Si
(Vink-modified SW) inherent states of 512 and 4096 atoms, and on relaxed 1024-site bcc Fe cells
(Mendelev EAM) with a vacancy or a <110> di-interstitial (``--system fe-vacancy|fe-di``).

For every seed: the activation atom (drawn from the default rule's candidates: energy or
coordination unlike the host's) and direction d of ARTn (atom and neighbours within 3 Å) are
drawn; ARTn runs from the minimum with them; the dimer starts from x0 + 0.1 Å·d/max|d_i| with d
as its initial mode and runs to the same force tolerance. Reported per method: success rate (a first-order
saddle, inertia 1 checked exactly, for ARTn also connected to the minimum), force evaluations
and Hessian/eigensolver calls per converged saddle, wall time. Samples are melt-quenched once and
cached in bench/cache/ (durations below; the paper's 20 + 100 ns are for a cluster).

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python bench/saddles.py --atoms 512 --seeds 10
    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python bench/saddles.py --system fe-vacancy --seeds 8 --no-plain --no-paper-fmax
    NUMBA_NUM_THREADS=2 OMP_NUM_THREADS=2 python bench/saddles.py --atoms 4096 --seeds 8 --no-plain --no-paper-fmax
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _util import append_result  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "saddles.jsonl")
POT = "Si_sw_vink"
SYSTEMS = ("asi", "fe-vacancy", "fe-di")


def fe_sample(system):
    """A relaxed (8 a0)³ bcc Fe cell (Mendelev EAM) with a vacancy (1 023 atoms) or a compact
    <110> di-interstitial (1 026 atoms), relaxed to 1e-6 eV/Å once and cached."""
    import ase.io

    from hpcvib.geometry.defects import build_defect, generate
    from hpcvib.landscape.exact_minimum import relax_to_minimum
    from hpcvib.potentials import lattice_constant, load_potential

    path = os.path.join(HERE, "cache", f"{system}.extxyz")
    if not os.path.exists(path):
        pot = load_potential("Fe_mm")
        specs = generate(vacancies=(1,), interstitials=(), crowdions=False) if system == "fe-vacancy" else \
            generate(vacancies=(), interstitials=(2,), orientations=("110",), crowdions=False)
        atoms = relax_to_minimum(build_defect(specs[0], 8, lattice_constant(pot, "bcc")), pot, 1e-6).atoms
        ase.io.write(path, atoms)
    atoms = ase.io.read(path)
    return atoms, {"defect": system, "atoms": len(atoms)}


def sample(n_atoms):
    import ase.io

    from hpcvib.landscape.amorphous import melt_quench, starting_cell, structure_report

    path = os.path.join(HERE, "cache", f"asi{n_atoms}.extxyz")
    if not os.path.exists(path):
        ps = (5.0, 5.0, 10.0) if n_atoms <= 1000 else (2.0, 2.0, 4.0)
        q, _ = melt_quench(starting_cell(n_atoms, seed=1), POT, seed=1, melt_ps=ps[0], cool_ps=ps[1], anneal_ps=ps[2])
        q.info["quench_ps"] = str(ps)
        ase.io.write(path, q)
    atoms = ase.io.read(path)
    return atoms, structure_report(atoms, POT)


class CountingPotential:
    """Wraps a potential and counts energy/force evaluations."""

    def __init__(self, pot):
        self.pot, self.calls = pot, 0

    def __getattr__(self, name):
        return getattr(self.pot, name)

    def evaluate(self, atoms):
        self.calls += 1
        return self.pot.evaluate(atoms)


def run_artn(minimum, seed, newton, fmax):
    from mpi4py import MPI

    from hpcvib.landscape.artn import ArtnSettings, SaddleSearch

    res = SaddleSearch(MPI.COMM_SELF, POT, ArtnSettings(fmax=fmax, newton=newton)).search(minimum, seed=seed)
    return {"ok": res.status == "ok", "reason": res.reason, "forces": res.counts["forces"],
            "hessian_or_mode_calls": res.counts["modes"] + res.counts["hessians"], "seconds": res.seconds,
            "delta_E": res.delta_E_eV}


def run_dimer(minimum, seed, fmax, max_steps=3000):
    from ase.mep import DimerControl, MinModeAtoms, MinModeTranslate
    from mpi4py import MPI

    from hpcvib.landscape.artn import activation_direction
    from hpcvib.physics.thermo import analyse_structure
    from hpcvib.potentials import load_potential
    from hpcvib.potentials.calculator import HpcvibCalculator

    from hpcvib.landscape.artn import SaddleSearch

    rng = np.random.default_rng(seed)  # the draws of SaddleSearch.search: same atom, same direction
    pool = SaddleSearch(MPI.COMM_SELF, POT).activation_pool(minimum)
    atom = int(pool[rng.integers(len(pool))])
    d = activation_direction(minimum, atom, 3.0, rng)
    calc = HpcvibCalculator(POT)
    counting = CountingPotential(calc.potential)
    calc.potential = counting
    atoms = minimum.copy()
    atoms.calc = calc
    t = time.perf_counter()
    control = DimerControl(initial_eigenmode_method="displacement", displacement_method="vector", logfile=None)
    dimer = MinModeAtoms(atoms, control)
    dimer.displace(displacement_vector=0.1 * d / np.linalg.norm(d, axis=1).max())
    ok = bool(MinModeTranslate(dimer, trajectory=None, logfile=None).run(fmax=fmax, steps=max_steps))
    seconds = time.perf_counter() - t
    out = {"ok": False, "forces": counting.calls, "seconds": seconds, "reason": "" if ok else "not converged"}
    if ok:
        saddle = atoms.copy()
        saddle.calc = None
        an = analyse_structure(MPI.COMM_SELF, saddle, load_potential(POT), "dimer saddle")
        out["ok"] = an.n_negative == 1
        out["reason"] = "" if out["ok"] else f"converged to a point with {an.n_negative} negative modes"
        out["delta_E"] = an.energy - load_potential(POT).evaluate(minimum).energy
    return out


def each_search(name, run, seeds):
    """Run ``run(seed)`` for every seed, printing each result as it comes (long runs on large
    cells show their progress)."""
    runs = []
    for seed in seeds:
        r = run(seed)
        print(f"  {name} seed {seed}: {'ok' if r['ok'] else 'failed (' + r['reason'][:60] + ')'}, "
              f"{r['forces']} force calls, {r.get('hessian_or_mode_calls', 0)} Hessian/mode calls, "
              f"{r['seconds']:.1f} s", flush=True)
        runs.append(r)
    return runs


def summarise(name, runs, n_atoms, fmax, extra):
    ok = [r for r in runs if r["ok"]]
    row = {"bench": "saddles", "method": name, "n_atoms": n_atoms, "fmax": fmax, "searches": len(runs),
           "converged": len(ok), "success_rate": len(ok) / max(len(runs), 1),
           "forces_per_saddle": float(np.mean([r["forces"] for r in ok])) if ok else None,
           "forces_per_search": float(np.mean([r["forces"] for r in runs])),
           "hessian_or_mode_calls_per_saddle": float(np.mean([r.get("hessian_or_mode_calls", 0) for r in ok])) if ok else None,
           "seconds_per_saddle": float(sum(r["seconds"] for r in runs) / max(len(ok), 1)),
           "failures": sorted({r["reason"][:60] for r in runs if not r["ok"]}),
           "date": time.strftime("%Y-%m-%d"), **extra}
    append_result(RESULTS, row)
    print({k: row[k] for k in ("method", "n_atoms", "fmax", "converged", "searches", "forces_per_saddle",
                                "hessian_or_mode_calls_per_saddle", "seconds_per_saddle")}, flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", choices=SYSTEMS, default="asi", help="a-Si (--atoms) or a 1024-site Fe cell")
    p.add_argument("--atoms", type=int, default=512, help="a-Si cell size")
    p.add_argument("--seeds", type=int, default=12)
    p.add_argument("--fmax", type=float, default=1e-4, help="common force tolerance, eV/Å")
    p.add_argument("--no-dimer", action="store_true")
    p.add_argument("--no-plain", action="store_true", help="skip ARTn with plain steps (slow on large cells)")
    p.add_argument("--no-paper-fmax", action="store_true", help="skip the second ARTn run at 1e-7 eV/Å")
    args = p.parse_args()
    global POT
    if args.system == "asi":
        minimum, report = sample(args.atoms)
        report = {k: report[k] for k in ("energy_eV_per_atom", "coordination_defects", "bond_angle_std_deg")}
    else:
        POT = "Fe_mm"
        minimum, report = fe_sample(args.system)
        args.atoms = len(minimum)
    extra = {"sample": report, "system": args.system, "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None}
    seeds = range(args.seeds)
    runs = [("artn+exact-hessian", args.fmax, lambda s: run_artn(minimum, s, True, args.fmax))]
    if not args.no_paper_fmax:
        runs.append(("artn+exact-hessian", 1e-7, lambda s: run_artn(minimum, s, True, 1e-7)))
    if not args.no_plain:
        runs.append(("artn-plain", args.fmax, lambda s: run_artn(minimum, s, False, args.fmax)))
    if not args.no_dimer:
        runs.append(("ase-dimer", args.fmax, lambda s: run_dimer(minimum, s, args.fmax)))
    for name, fmax, run in runs:
        summarise(name, each_search(name, run, seeds), args.atoms, fmax, extra)


if __name__ == "__main__":
    main()
