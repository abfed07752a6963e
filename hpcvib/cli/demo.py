"""``hpcvib demo``: the direct route of the paper on its own cell size, exactly.

A vacancy in the 1024-site bcc Fe cell (8 a0)³ with Mendelev's EAM: relaxation, formation energy,
exact formation entropy (Eq. 20) against the perfect cell, the vacancy-jump saddle (CI-NEB, then
Newton steps with the exact Hessian), its inertia, the Vineyard attack frequency (Eq. 24–25) and
harmonic-TST rates (Eq. 23). Serial ASE work runs on rank 0; the exact linear algebra runs on all
ranks (MUMPS/SLEPc over ``comm``).
"""

from __future__ import annotations

import time

import numpy as np

from hpcvib.log import get_logger
from hpcvib.parallel import root_only


def _build_endpoints(n: int, potential: str):
    from hpcvib.geometry.structures import bcc_supercell
    from hpcvib.landscape.saddle import relax
    from hpcvib.potentials import lattice_constant, load_potential

    a0 = lattice_constant(load_potential(potential))
    perfect = bcc_supercell(n, a0)
    initial = perfect.copy()
    del initial[0]
    mover = int(np.argmin(np.linalg.norm(initial.positions - 0.5 * a0, axis=1)))
    final = initial.copy()
    final.positions[mover] = perfect.positions[0]
    return perfect, relax(initial, potential), relax(final, potential)


def run_demo(comm, n: int = 8, potential: str = "Fe_mm", temperatures=(300.0, 600.0, 900.0)) -> dict:
    """Run the demo on ``comm`` and return its results (also logged)."""
    from hpcvib.landscape.saddle import neb_saddle
    from hpcvib.physics.thermo import analyse_structure, formation_energy, formation_entropy, htst_rate, ln_attack_frequency
    from hpcvib.potentials import load_potential

    log = get_logger("demo")
    pot = load_potential(potential)
    t0 = time.perf_counter()
    log.info("building and relaxing the (%d a0)^3 vacancy cell and its jump end point (rank 0)", n)
    perfect, initial, final = root_only(comm, _build_endpoints, n, potential)
    log.info("climbing-image NEB + Newton refinement of the vacancy-jump saddle (rank 0)")
    saddle = root_only(comm, lambda: neb_saddle(initial, final, potential)[0])
    t_struct = time.perf_counter() - t0
    bulk = analyse_structure(comm, perfect, pot, "perfect", expect="minimum")
    vac = analyse_structure(comm, initial, pot, "vacancy", expect="minimum")
    sad = analyse_structure(comm, saddle, pot, "saddle", expect="saddle")
    s_f, conv = formation_entropy(vac.ln_det_prime, vac.n_atoms, bulk.ln_det_prime, bulk.n_atoms)
    lam = float(sad.lowest_eigenvalues[0])
    ln_nu = ln_attack_frequency(vac.ln_det_prime, sad.ln_det_prime, lam)
    barrier = sad.energy - vac.energy
    return {
        "cell": f"bcc Fe ({n} a0)^3, {bulk.n_atoms} sites", "potential": pot.name, "ranks": comm.size,
        "E_f_eV": formation_energy(vac.energy, vac.n_atoms, bulk.energy, bulk.n_atoms),
        "S_f_kB": s_f, "S_f_convention": conv,
        "kinds": {"perfect": bulk.kind, "vacancy": vac.kind, "saddle": sad.kind},
        "delta_E_eV": barrier, "lambda_neg": lam, "ln_nu_THz": ln_nu, "nu_THz": float(np.exp(ln_nu)),
        "rates_per_s": {f"{t:g}K": htst_rate(ln_nu, barrier, t) for t in temperatures},
        "seconds": {"structures (rank 0)": t_struct,
                    "exact thermodynamics": sum(sum(r.timings.values()) for r in (bulk, vac, sad))},
        "ln_det_prime": {"perfect": bulk.ln_det_prime, "vacancy": vac.ln_det_prime, "saddle": sad.ln_det_prime},
    }


def format_table(res: dict) -> str:
    rows = [
        ("cell", res["cell"]),
        ("potential", res["potential"]),
        ("MPI ranks", str(res["ranks"])),
        ("kinds (inertia)", ", ".join(f"{k}: {v}" for k, v in res["kinds"].items())),
        ("vacancy formation energy E_f", f"{res['E_f_eV']:.4f} eV"),
        ("vacancy formation entropy S_f (Eq. 20)", f"{res['S_f_kB']:.4f} k_B"),
        ("migration barrier ΔE", f"{res['delta_E_eV']:.4f} eV"),
        ("unstable eigenvalue λ_neg", f"{res['lambda_neg']:.6f} eV/(Å² amu)"),
        ("attack frequency ν* (Vineyard)", f"{res['nu_THz']:.4f} THz (ln ν*/THz = {res['ln_nu_THz']:.6f})"),
    ] + [(f"HTST jump rate at {t}", f"{r:.4e} /s") for t, r in res["rates_per_s"].items()] + [
        ("time: relax + NEB (rank 0)", f"{res['seconds']['structures (rank 0)']:.1f} s"),
        ("time: exact Hessians + MUMPS (3 cells)", f"{res['seconds']['exact thermodynamics']:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
