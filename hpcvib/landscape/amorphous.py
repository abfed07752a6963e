"""Amorphous-silicon inherent states by melt–quench (paper Sec. II A, a-Si database).

Protocol of the paper, with durations as parameters (the paper's 20 ns + 100 ns are for a
cluster): a cubic cell at the target density (2.192 g/cm³ by default) with random positions is
equilibrated as a liquid at 2300 K, cooled linearly to 700 K and annealed there (NVT Langevin, 1 fs, ASE with hpcvib's
calculator — the Vink-modified Stillinger–Weber by default), then minimised (FIRE, L-BFGS and
exact-Hessian Newton steps to 1e-9 eV/Å). :func:`structure_report` gives what a user needs to
judge the sample: energy per atom, coordination statistics and the bond-angle distribution.
"""

from __future__ import annotations

import numpy as np

from hpcvib.constants import AMU_G
from hpcvib.errors import InputError
from hpcvib.log import get_logger


def cubic_cell_length(n_atoms: int, density_g_cm3: float, mass_amu: float) -> float:
    """Edge (Å) of the cubic cell holding ``n_atoms`` of ``mass_amu`` at the density (g/cm³)."""
    if density_g_cm3 <= 0 or n_atoms < 1:
        raise InputError(f"density and number of atoms must be positive (got {density_g_cm3}, {n_atoms})")
    return float((n_atoms * mass_amu * AMU_G * 1e24 / density_g_cm3) ** (1.0 / 3.0))


def starting_cell(n_atoms: int, density_g_cm3: float = 2.192, symbol: str = "Si", seed: int = 0,
                  min_distance: float = 2.0):
    """Random positions in the cubic cell of the density, no two atoms closer than
    ``min_distance`` Å (sequential random insertion, seeded): a liquid-like start. (A diamond
    start does not melt in picoseconds at 2300 K with the Vink potential: measured — it stays a
    superheated crystal and quenches back to diamond.)"""
    from ase import Atoms
    from ase.data import atomic_masses, atomic_numbers

    mass = atomic_masses[atomic_numbers[symbol]]
    length = cubic_cell_length(n_atoms, density_g_cm3, mass)
    rng = np.random.default_rng(seed)
    placed = np.empty((0, 3))
    for _ in range(n_atoms):
        for _attempt in range(10000):
            p = rng.uniform(0.0, length, 3)
            d = placed - p
            d -= np.rint(d / length) * length
            if len(placed) == 0 or (d ** 2).sum(axis=1).min() >= min_distance ** 2:
                placed = np.vstack([placed, p])
                break
        else:
            raise InputError(f"cannot place {n_atoms} atoms {min_distance} Å apart at {density_g_cm3} g/cm³")
    return Atoms(symbol * n_atoms, positions=placed, cell=np.eye(3) * length, pbc=True)


def melt_quench(atoms, potential, seed: int = 0, t_melt: float = 2300.0, melt_ps: float = 10.0,
                t_anneal: float = 700.0, cool_ps: float = 10.0, anneal_ps: float = 20.0,
                timestep_fs: float = 1.0, friction_per_fs: float = 0.01, fmax: float = 1e-9):
    """Melt at ``t_melt``, cool linearly to ``t_anneal``, anneal, minimise. Returns (relaxed
    Atoms, log dict with the mean temperature and potential energy of each phase). Deterministic
    for a seed (ASE Langevin with a seeded generator)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.parallel import DummyMPI

    from hpcvib.landscape.saddle import relax
    from hpcvib.potentials.calculator import HpcvibCalculator

    log = get_logger("amorphous")
    rng = np.random.RandomState(seed)
    from ase.constraints import FixCom

    work = atoms.copy()
    work.calc = HpcvibCalculator(potential)
    # ASE's MD broadcasts its random numbers over ase.parallel.world by default: a rank group
    # without world rank 0 would wait for them forever. The run is rank-local and seeded.
    no_mpi = DummyMPI()
    MaxwellBoltzmannDistribution(work, temperature_K=t_melt, rng=rng, comm=no_mpi)
    work.set_constraint(FixCom())  # no drift of the centre of mass
    dyn = Langevin(work, timestep_fs * units.fs, temperature_K=t_melt, friction=friction_per_fs / units.fs,
                   rng=rng, fixcm=False, comm=no_mpi)
    history = {}

    def run_phase(name, n_steps, temperature_of_step):
        temps, energies = [], []
        for step in range(n_steps):
            dyn.set_temperature(temperature_K=temperature_of_step(step))
            dyn.run(1)
            if step % 10 == 0:
                temps.append(work.get_temperature())
                energies.append(work.get_potential_energy() / len(work))
        history[name] = {"steps": n_steps, "mean_T_K": float(np.mean(temps)) if temps else None,
                         "mean_E_eV_per_atom": float(np.mean(energies)) if energies else None}
        log.info("%s: %d steps, <T> = %.0f K, <E>/N = %.4f eV", name, n_steps,
                 history[name]["mean_T_K"] or 0, history[name]["mean_E_eV_per_atom"] or 0)

    steps = lambda ps: int(round(ps * 1000.0 / timestep_fs))  # noqa: E731
    n_cool = max(steps(cool_ps), 1)
    run_phase("melt", steps(melt_ps), lambda s: t_melt)
    run_phase("cool", steps(cool_ps), lambda s: t_melt + (t_anneal - t_melt) * (s + 1) / n_cool)
    run_phase("anneal", steps(anneal_ps), lambda s: t_anneal)
    work.calc = None
    work.set_constraint()
    quenched = relax(work, potential, fmax=min(max(fmax, 1e-8), 1e-4), refine=True)
    return quenched, history


def structure_report(atoms, potential=None, bond_cutoff: float = 2.9) -> dict:
    """Energy per atom (when a potential is given), coordination numbers within
    ``bond_cutoff`` Å (fractions of 3-, 4-, 5-fold atoms: 4 is the ideal tetrahedral network),
    and the bond-angle distribution (mean and standard deviation, degrees; ideal 109.47°)."""
    from ase.neighborlist import neighbor_list

    i, j, d, D = neighbor_list("ijdD", atoms, bond_cutoff)
    n = len(atoms)
    coordination = np.bincount(i, minlength=n)
    angles = []
    order = np.argsort(i, kind="stable")
    i, D = i[order], D[order]
    starts = np.searchsorted(i, np.arange(n + 1))
    for a in range(n):
        vecs = D[starts[a]:starts[a + 1]]
        if len(vecs) < 2:
            continue
        u = vecs / np.linalg.norm(vecs, axis=1)[:, None]
        c = np.clip(u @ u.T, -1.0, 1.0)
        iu = np.triu_indices(len(u), 1)
        angles.append(np.degrees(np.arccos(c[iu])))
    angles = np.concatenate(angles) if angles else np.zeros(0)
    counts = np.bincount(coordination, minlength=7)
    out = {"n_atoms": n, "density_g_cm3": float(atoms.get_masses().sum() * AMU_G * 1e24 / atoms.get_volume()),
           "bond_cutoff_A": bond_cutoff, "mean_coordination": float(coordination.mean()),
           "coordination_fractions": {str(k): float(counts[k] / n) for k in range(len(counts)) if counts[k]},
           "coordination_defects": int(n - counts[4]),
           "bond_angle_mean_deg": float(angles.mean()) if len(angles) else None,
           "bond_angle_std_deg": float(angles.std()) if len(angles) else None}
    if potential is not None:
        from hpcvib.potentials import load_potential

        out["energy_eV_per_atom"] = float(load_potential(potential).evaluate(atoms).energy / n)
    return out
