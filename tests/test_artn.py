"""Saddle search (ARTn with the exact Hessian), a-Si melt-quench, and their rules."""

import json

import numpy as np
import pytest
from mpi4py import MPI

from hpcvib.landscape.artn import ArtnSettings, SaddleSearch, duplicate_events, same_minimum
from hpcvib.potentials import load_potential

from hpcvib.geometry.structures import bcc_supercell

from conftest import fe_a0, fe_vacancy_neb, fe_vacancy_saddle, serial_only


def _towards_vacancy(neb):
    initial = neb["initial"]
    d = np.zeros_like(initial.positions)
    d[neb["mover"]] = neb["vacancy_site"] - initial.positions[neb["mover"]]
    return d


def test_vacancy_jump_saddle_matches_neb(comm):
    """ARTn from the relaxed vacancy, pushed towards the vacant site: the barrier equals ASE's
    CI-NEB on the same potential (1e-4 eV) and the Newton-refined NEB saddle (1e-7 eV); the
    saddle has exactly one negative eigenvalue."""
    neb = fe_vacancy_neb(4)
    res = SaddleSearch(comm, "Fe_mm").search(neb["initial"], seed=1, atom=neb["mover"], direction=_towards_vacancy(neb))
    assert res.status == "ok", res.reason
    assert res.n_negative == 1 and res.lambda_neg < 0
    pot = load_potential("Fe_mm")
    refined = pot.evaluate(neb["saddle"]).energy - pot.evaluate(neb["initial"]).energy
    assert abs(res.delta_E_eV - neb["neb_barrier"]) < 1e-4
    assert abs(res.delta_E_eV - refined) < 1e-7
    assert np.abs(pot.evaluate(res.saddle).forces).max() < 1e-7
    # the adjacent minimum beyond this saddle is Mendelev-Fe's shallow metastable state at the
    # middle of the jump (or the jumped vacancy): a different minimum, below the saddle, with the
    # mover displaced towards the vacant site
    assert not same_minimum(neb["initial"], res.final, 0.05)
    assert res.energies["final"] < res.energies["saddle"]
    moved = res.final.positions[neb["mover"]] - neb["initial"].positions[neb["mover"]]
    assert np.dot(moved, neb["vacancy_site"] - neb["initial"].positions[neb["mover"]]) > 0
    assert res.counts["forces"] > 0 and res.counts["modes"] > 0


def test_failed_search_is_recorded_with_reason(comm):
    neb = fe_vacancy_neb(4)
    settings = ArtnSettings(max_activation_steps=1, initial_displacement=0.01, push_step=0.01)
    res = SaddleSearch(comm, "Fe_mm", settings).search(neb["initial"], seed=3)
    assert res.status == "failed" and "no negative mode" in res.reason
    assert np.isnan(res.delta_E_eV)


def test_search_is_deterministic_for_a_seed():
    neb = fe_vacancy_neb(4)
    runs = [SaddleSearch(MPI.COMM_SELF, "Fe_mm").search(neb["initial"], seed=11) for _ in range(2)]
    assert runs[0].status == runs[1].status and runs[0].reason == runs[1].reason
    assert runs[0].atom == runs[1].atom
    if runs[0].status == "ok":
        assert runs[0].delta_E_eV == runs[1].delta_E_eV
        assert np.array_equal(runs[0].saddle.positions, runs[1].saddle.positions)


def test_search_independent_of_rank_count(comm):
    neb = fe_vacancy_neb(4)
    d = _towards_vacancy(neb)
    # the same algorithm on every group size: min-mode following with dense factors needs one
    # process, so both runs use the distributed (SLEPc) route
    settings = ArtnSettings(mode_solver="slepc")
    world = SaddleSearch(comm, "Fe_mm", settings).search(neb["initial"], seed=1, atom=neb["mover"], direction=d)
    alone = SaddleSearch(MPI.COMM_SELF, "Fe_mm", settings).search(neb["initial"], seed=1, atom=neb["mover"],
                                                                 direction=d)
    assert world.status == alone.status == "ok"
    assert abs(world.delta_E_eV - alone.delta_E_eV) < 1e-9
    assert abs(world.ln_nu_THz - alone.ln_nu_THz) < 1e-7


def test_connectivity_and_duplicate_rules():
    neb = fe_vacancy_neb(4)
    a = neb["initial"]
    shifted = a.copy()
    shifted.positions += [0.3, -0.2, 0.1]  # rigid translation: the same minimum
    assert same_minimum(a, shifted, 0.05)
    assert not same_minimum(a, neb["final"], 0.05)
    events = [("e0", 0.60, 1.2), ("e1", 0.6004, 1.205), ("e2", 0.60, 0.9), ("e3", 0.75, 1.2)]
    assert duplicate_events(events, 1e-3, 0.02) == {"e1": "e0"}


def test_melt_quench_and_structure_report():
    from hpcvib.landscape.amorphous import cubic_cell_length, melt_quench, starting_cell, structure_report

    start = starting_cell(64, 2.192)
    # density from the definition: N m / L³ with m = 28.0855 amu = 28.0855 / 6.02214076e23 g
    assert np.isclose(64 * 28.0855 / 6.02214076e23 / (cubic_cell_length(64, 2.192, 28.0855) * 1e-8) ** 3, 2.192)
    q1, hist = melt_quench(start, "Si_sw_vink", seed=4, melt_ps=0.2, cool_ps=0.1, anneal_ps=0.1)
    q2, _ = melt_quench(start, "Si_sw_vink", seed=4, melt_ps=0.2, cool_ps=0.1, anneal_ps=0.1)
    assert np.array_equal(q1.positions, q2.positions)
    assert hist["melt"]["mean_T_K"] > 1000
    rep = structure_report(q1, "Si_sw_vink")
    assert np.isclose(rep["density_g_cm3"], 2.192, rtol=1e-10)
    assert np.isclose(sum(rep["coordination_fractions"].values()), 1.0)
    # above the perfect diamond crystal, whose SW energy is exactly -2 ε per atom (every bond at
    # the pair minimum -ε, tetrahedral angles: no three-body term), below the random start
    eps = 1.64833
    pot = load_potential("Si_sw_vink")
    assert -2 * eps < rep["energy_eV_per_atom"] < pot.evaluate(start).energy / len(start)
    assert np.abs(load_potential("Si_sw_vink").evaluate(q1).forces).max() < 1e-8


def test_melt_quench_md_stays_on_its_rank(comm, monkeypatch):
    """The melt-quench MD must not talk to other ranks: ASE's Langevin broadcasts its random
    numbers over ``ase.parallel.world`` by default, and a rank group without world rank 0 (any
    farmed sample but the first, under mpiexec) then waits forever. Checked directly on the
    thermostat's communicator, and by running a short quench on the last rank alone."""
    import ase.md.langevin
    import ase.parallel

    from hpcvib.landscape.amorphous import melt_quench, starting_cell

    comms = []

    class Spy(ase.md.langevin.Langevin):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            comms.append(self.comm)

    monkeypatch.setattr(ase.md.langevin, "Langevin", Spy)
    if comm.rank == comm.size - 1:
        melt_quench(starting_cell(16, 2.192), "Si_sw_vink", seed=1, melt_ps=0.01, cool_ps=0.01, anneal_ps=0.01)
        assert len(comms) == 1 and comms[0] is not ase.parallel.world and comms[0].size == 1
    comm.Barrier()


@serial_only()
def test_saddle_command(tmp_path):
    import ase.io

    from test_cli import run

    neb = fe_vacancy_neb(4)
    path = tmp_path / "vac.extxyz"
    ase.io.write(path, neb["initial"])
    proc = run("saddle", path, "-p", "Fe_mm", "--seed", "2", "--atom", neb["mover"], "-o", tmp_path / "ev.extxyz",
               "--json", check=False)
    out = json.loads(proc.stdout)
    assert proc.returncode == (0 if out["status"] == "ok" else 1)
    if out["status"] == "ok":
        frames = ase.io.read(tmp_path / "ev.extxyz", ":")
        assert [f.info["kind"] for f in frames] == ["minimum", "saddle", "final minimum"]
        assert out["n_negative"] == 1 and out["delta_E_eV"] > 0
    bad = run("saddle", path, "-p", "Fe_mm", "--atom", "100000", check=False)
    assert bad.returncode == 2 and "--atom" in bad.stderr


def test_warm_started_unverified_modes_match_verified(comm):
    """The search's fast path (given shift, warm start, no inertia proof) finds the same lowest
    eigenpairs as the verified default, on the vacancy-jump saddle (one negative eigenvalue)."""
    from hpcvib.linalg.hessian import assemble_hessian
    from hpcvib.linalg.spectral import lowest_modes

    dh = assemble_hessian(comm, fe_vacancy_neb(4)["saddle"], "Fe_mm")
    ref = lowest_modes(dh, k=4, want_vectors=True)
    fast = lowest_modes(dh, k=4, want_vectors=True, initial=ref.vectors[:, 0], sigma=ref.eigenvalues[0] - 0.02,
                        verify=False)
    assert np.allclose(fast.eigenvalues, ref.eigenvalues, atol=1e-8)
    assert abs(abs(fast.vectors[:, 0] @ ref.vectors[:, 0]) - 1.0) < 1e-6


def test_deflated_warm_start_matches_dense_spectrum(comm):
    """The search's warm-started call with the translations deflated (k = 2, no inertia proof)
    returns the two lowest non-zero eigenvalues of D; reference: dense LAPACK eigenvalues of the
    same matrix with its three exact zeros removed. Asking to verify a deflated solve is refused."""
    from hpcvib.landscape.artn import mass_weighted_translations
    from hpcvib.linalg.hessian import assemble_hessian
    from hpcvib.linalg.spectral import dense_eigenvalues, lowest_modes

    saddle = fe_vacancy_neb(4)["saddle"]
    dh = assemble_hessian(comm, saddle, "Fe_mm")
    dense = np.sort(dense_eigenvalues(dh))
    nonzero = dense[np.abs(dense) > 1e-9]
    assert len(nonzero) == len(dense) - 3
    t = mass_weighted_translations(saddle)
    ref = lowest_modes(dh, k=4, want_vectors=True)
    fast = lowest_modes(dh, k=2, want_vectors=True, initial=ref.vectors[:, 0], sigma=ref.eigenvalues[0] - 0.02,
                        verify=False, deflate=t)
    assert np.allclose(fast.eigenvalues, nonzero[:2], atol=1e-8)
    assert np.abs(t.T @ fast.vectors).max() < 1e-8  # orthogonal to the translations
    # a shift inside the spectrum (above the 10th eigenvalue, as after a large step): the inertia
    # of the shifted factorisation shows what was missed, and the lowest pairs are still returned;
    # a shift just below λ1, and one next to the translations' zeros, too
    for sigma in (nonzero[10] + 1e-4, nonzero[0] - 1e-3, 0.0):
        shifted = lowest_modes(dh, k=2, want_vectors=True, initial=ref.vectors[:, 0], sigma=sigma,
                               verify=False, deflate=t)
        assert np.allclose(shifted.eigenvalues, nonzero[:2], atol=1e-8), sigma
    with pytest.raises(ValueError, match="verify"):
        lowest_modes(dh, k=2, deflate=t)


def test_newton_direction_dense_and_sparse_solvers_agree(comm, monkeypatch):
    """Both solvers behind a Newton step (dense LAPACK LDLᵀ for small cells, MUMPS LDLᵀ on the
    Hessian distributed over ``comm`` above ``DENSE_SOLVE_MAX_DOF``) solve H_(-0) Δx = F_(-0)
    with atom 0 pinned; reference: the residual against the assembled sparse Hessian, and each
    other. The indefinite case (near the vacancy saddle) is included."""
    import hpcvib.landscape.saddle as saddle_module

    pot = load_potential("Fe_mm")
    atoms = fe_vacancy_neb(4)["initial"].copy()
    atoms.positions += 0.01 * np.random.default_rng(3).normal(size=atoms.positions.shape)
    forces = pot.evaluate(atoms).forces
    saddle = fe_vacancy_saddle(4)
    for x in (atoms, saddle):
        forces = pot.evaluate(x).forces
        if x is saddle:
            forces = forces + 1e-3 * np.random.default_rng(4).normal(size=forces.shape)
        monkeypatch.setattr(saddle_module, "DENSE_SOLVE_MAX_DOF", 10 ** 6)
        dense = saddle_module.newton_direction(pot, x, forces)
        monkeypatch.setattr(saddle_module, "DENSE_SOLVE_MAX_DOF", 0)
        sparse = saddle_module.newton_direction(pot, x, forces, comm=comm)
        assert np.all(dense[0] == 0.0) and np.all(sparse[0] == 0.0)
        H = pot.hessian(x).tocsr()
        residual = H[3:, 3:] @ dense.ravel()[3:] - forces.ravel()[3:]
        assert np.abs(residual).max() < 1e-9 * np.abs(forces).max() + 1e-12
        assert np.allclose(dense, sparse, rtol=0, atol=1e-10 * np.abs(dense).max())


def test_relax_with_newton_steps_reaches_the_lbfgs_minimum():
    """``relax(newton=True)`` (FIRE, then exact-Hessian Newton steps; used on both sides of every
    saddle) ends at the minimum that FIRE + L-BFGS reaches, to the force tolerance."""
    from hpcvib.landscape.saddle import relax

    pot = load_potential("Fe_mm")
    start = fe_vacancy_neb(4)["initial"].copy()
    start.positions += 0.05 * np.random.default_rng(5).normal(size=start.positions.shape)
    newton = relax(start, pot, fmax=1e-7, refine=False, newton=True)
    lbfgs = relax(start, pot, fmax=1e-7, refine=False)
    assert np.linalg.norm(pot.evaluate(newton).forces, axis=1).max() < 1e-7
    assert same_minimum(newton, lbfgs, 1e-5)


def test_perpendicular_relaxation_halves_a_step_that_overshoots():
    """Steepest descent in the hyperplane ⊥ d with α·k > 2 for the stiffest direction oscillates
    (period 2, held at max |F| = max_move/α by the cap) instead of descending; the search halves
    α after a step that raised the energy. Reference: the energy, which such a relaxation must
    lower, and the force, which must end below the oscillation's max_move/α plateau."""
    from hpcvib.landscape.artn import cartesian_direction

    start = fe_vacancy_neb(4)["initial"].copy()
    start.positions += 0.05 * np.random.default_rng(6).normal(size=start.positions.shape)
    search = SaddleSearch(MPI.COMM_SELF, "Fe_mm", ArtnSettings(perpendicular_alpha=0.3, max_move=0.1))
    search._alpha = search.s.perpendicular_alpha
    d = cartesian_direction(np.random.default_rng(7).normal(size=3 * len(start)), start)
    d /= np.linalg.norm(d)
    pot = load_potential("Fe_mm")
    e0 = pot.evaluate(start).energy
    x = start.copy()
    search._relax_perpendicular(x, d, 30, _counter())
    ev = pot.evaluate(x)
    f_perp = ev.forces - np.sum(ev.forces * d) * d
    assert ev.energy < e0
    assert np.linalg.norm(f_perp, axis=1).max() < 0.5 * search.s.max_move / search.s.perpendicular_alpha
    assert search._alpha < 0.3


def _counter():
    from hpcvib.landscape.artn import _Counter

    return _Counter()


def test_activation_starts_at_the_defect():
    """Default rule: in a relaxed vacancy cell the candidates are the atoms around the vacancy
    (within the second-neighbour shell of the empty site, a0 = 2.855 Å: 2.47 and 2.86 Å), every
    first neighbour among them; a perfect cell offers every atom."""
    from hpcvib.geometry.structures import minimum_image
    from hpcvib.landscape.artn import activation_candidates

    neb = fe_vacancy_neb(4)
    atoms = neb["initial"]
    pot = load_potential("Fe_mm")
    chosen = activation_candidates(atoms, pot)
    d = np.linalg.norm(minimum_image(atoms.positions - neb["vacancy_site"], atoms.get_cell()), axis=1)
    assert 8 <= len(chosen) < len(atoms) // 4
    assert d[chosen].max() < 3.0
    assert set(np.flatnonzero(d < 2.6)) <= set(chosen.tolist())
    perfect = bcc_supercell(4, fe_a0())
    assert len(activation_candidates(perfect, pot)) == len(perfect)


def test_coordination_defects_are_activation_candidates():
    """Coordination numbers against counts by hand: every site of perfect bcc has 8 + 6
    neighbours within 1.2 × the nearest distance, and exactly the 14 sites around a vacancy lose
    one; in diamond Si (4 neighbours, second shell at 1.63×) the 4 neighbours of a vacancy are
    3-coordinated and are candidates of the default rule even where the energy rule alone would
    not single them out (a glass: its robust energy spread is wide)."""
    from ase.build import bulk

    from hpcvib.geometry.structures import minimum_image
    from hpcvib.landscape.artn import coordination_numbers, defect_atoms

    perfect = bcc_supercell(4, fe_a0())
    assert set(coordination_numbers(perfect).tolist()) == {14}
    site = perfect.positions[0].copy()
    vacancy = perfect[1:]
    d = np.linalg.norm(minimum_image(vacancy.positions - site, vacancy.get_cell()), axis=1)
    coordination = coordination_numbers(vacancy)
    assert set(np.flatnonzero(coordination == 13)) == set(np.flatnonzero(d < 0.5 * (2.86 + 4.04)))
    assert set(coordination[d > 3.5].tolist()) == {14}
    si = bulk("Si", "diamond", a=5.431, cubic=True).repeat(2)
    site = si.positions[0].copy()
    si = si[1:]
    d = np.linalg.norm(minimum_image(si.positions - site, si.get_cell()), axis=1)
    three = np.flatnonzero(coordination_numbers(si) == 3)
    assert set(three) == set(np.flatnonzero(d < 2.5)) and len(three) == 4
    flat = np.zeros(len(si))  # energies that single out nobody
    assert set(defect_atoms(si, flat)) == set(three)


def test_job_searches_visit_every_candidate_before_any_twice():
    from hpcvib.landscape.artn import activation_atom

    pool = np.array([3, 17, 40, 41, 99])
    first = [activation_atom(pool, i, seed=11) for i in range(5)]
    assert sorted(first) == pool.tolist()
    assert [activation_atom(pool, i, seed=11) for i in range(5, 10)] == first  # the next round, same order
    assert first != [activation_atom(pool, i, seed=12) for i in range(5)]


def test_json_output_has_null_not_nan():
    import io

    from hpcvib.cli.commands import emit_json

    out = io.StringIO()
    emit_json(MPI.COMM_SELF, {"a": float("nan"), "b": [1.0, float("inf")], "c": np.array([np.nan, 2.0]),
                              "d": np.float64("nan")}, stream=out)
    assert json.loads(out.getvalue()) == {"a": None, "b": [1.0, None], "c": [None, 2.0], "d": None}


@serial_only()
@pytest.mark.parametrize("seed", [13, 28])
def test_min_mode_following_converges_where_artn_steps_lost_the_mode(seed):
    """Seeds 13 and 28 from the relaxed 127-atom Fe vacancy: the ARTn steps (climb, then steepest
    descent across the mode; still used on several ranks) fall back into the basin four times and
    give up; min-mode following with one shifted factor per step (partitioned-RFO where λ1 < 0,
    uphill only where λ1 ≥ 0) ends at a first-order saddle (inertia 1 by an exact factorisation,
    forces < 1e-7 eV/Å) connected to the minimum (both sides relaxed, one to the start)."""
    neb = fe_vacancy_neb(4)
    old = SaddleSearch(MPI.COMM_SELF, "Fe_mm", ArtnSettings(mode_solver="slepc")).search(neb["initial"], seed=seed)
    assert old.status == "failed" and "lost the negative mode" in old.reason
    new = SaddleSearch(MPI.COMM_SELF, "Fe_mm").search(neb["initial"], seed=seed)
    assert new.status == "ok", new.reason
    assert new.n_negative == 1 and new.delta_E_eV > 0
    assert np.abs(load_potential("Fe_mm").evaluate(new.saddle).forces).max() < 1e-7


def test_mode_tracking_follows_the_overlapping_mode():
    """Where both lowest eigenvalues are negative the followed mode is the one that overlaps the
    previous mode more (eigenvector following), not simply the lowest; with one negative
    eigenvalue, or when the lowest overlaps more, the lowest stays."""
    from hpcvib.landscape.artn import Mode, _tracked

    atoms = bcc_supercell(2, fe_a0())
    n = 3 * len(atoms)
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((n, 2)))[0]
    previous = Mode(-0.02, None, 0.0, basis[:, 1], 0.01)

    def mode(lam1, lam2):
        return Mode(lam1, None, 0.0, basis[:, 0], lam2, None, basis.copy())

    switched = _tracked(mode(-0.08, -0.02), previous, atoms)
    assert switched.eigenvalue == -0.02 and switched.second_eigenvalue == -0.08
    assert np.array_equal(switched.vector, basis[:, 1])
    assert np.isclose(np.linalg.norm(switched.direction), 1.0)
    assert _tracked(mode(-0.08, 0.01), previous, atoms).eigenvalue == -0.08
    lowest_overlaps = Mode(-0.02, None, 0.0, basis[:, 0], 0.01)
    assert _tracked(mode(-0.08, -0.02), lowest_overlaps, atoms).eigenvalue == -0.08


@serial_only()
def test_dense_and_slepc_modes_agree():
    """The lowest mode of one configuration by the shifted dense factor and by SLEPc."""
    from hpcvib.landscape.artn import _Counter

    neb = fe_vacancy_neb(4)
    atoms = neb["saddle"]
    modes = [SaddleSearch(MPI.COMM_SELF, "Fe_mm", ArtnSettings(mode_solver=m)).lowest_mode(atoms, None, _Counter())
             for m in ("dense", "slepc")]
    assert modes[0].factor is not None and modes[1].factor is None
    assert np.isclose(modes[0].eigenvalue, modes[1].eigenvalue, rtol=1e-7)
    assert abs(abs(np.sum(modes[0].direction * modes[1].direction)) - 1) < 1e-6
