"""Exact thermodynamics: ln det' and inertia (MUMPS) against dense LAPACK, an analytic spring
lattice (Bloch sums), invariances, formation entropy and Vineyard ν* against dense spectra."""

import numpy as np
import pytest
import scipy.linalg

from hpcvib.constants import HBAR_OMEGA_UNIT_EV, NU_UNIT_THZ
from hpcvib.errors import HpcvibError, NotAMinimumError
from hpcvib.geometry.structures import bcc_supercell
from hpcvib.linalg.hessian import assemble_hessian
from hpcvib.linalg.spectral import full_spectrum, log_pseudo_determinant, lowest_modes, mumps_logdet
from hpcvib.potentials import load_potential
from hpcvib.physics.thermo import (analyse_structure, formation_entropy, htst_rate, ln_attack_frequency,
                           vibrational_entropy)

from conftest import fe_a0, fe_vacancy_saddle, relaxed_fe_vacancy


def dense_D(atoms, potential):
    H = load_potential(potential).hessian(atoms).toarray()
    inv = np.repeat(1 / np.sqrt(atoms.get_masses()), 3)
    return H * inv[:, None] * inv[None, :]


def nonzero(vals, n_zero=3):
    order = np.argsort(np.abs(vals))
    return np.sort(vals[order[n_zero:]])


def test_ln_det_prime_against_dense_eigvalsh(comm):
    atoms = relaxed_fe_vacancy(4)
    dh = assemble_hessian(comm, atoms, "Fe_mm")
    pd = log_pseudo_determinant(dh)
    ev = scipy.linalg.eigvalsh(dense_D(atoms, "Fe_mm"))
    ref = np.sum(np.log(nonzero(ev)))
    assert pd.n_negative == 0 and pd.kind == "minimum"
    assert pd.ln_det_prime == pytest.approx(ref, rel=1e-9)


def test_ln_det_prime_of_a_1024_atom_cell(comm):
    """(8 a0)³ bcc Fe with a vacancy (1023 atoms, 3069 dof) against dense eigvalsh."""
    atoms = bcc_supercell(8, fe_a0())
    del atoms[100]
    dh = assemble_hessian(comm, atoms, "Fe_mm")
    pd = log_pseudo_determinant(dh)
    ev = full_spectrum(dh, "dense")
    assert pd.ln_det_prime == pytest.approx(np.sum(np.log(np.abs(nonzero(ev)))), rel=1e-9)


def test_each_ordering_asked_for_is_the_one_mumps_uses(comm):
    """Orderings requested one after another in one process are all applied (INFOG(7) reports
    them; an earlier call's default must not stick), the determinant does not depend on them,
    and an ordering the user put into the options database wins over the argument."""
    from hpcvib.linalg.petsc_env import init_petsc

    atoms = relaxed_fe_vacancy(4)
    mat = assemble_hessian(comm, atoms, "Fe_mm").petsc_matrix(mass_weighted=True, symmetric=True, exclude_atom=0)
    try:
        results = {o: mumps_logdet(mat, ordering=o) for o in ("auto", "amd", "pord", "qamd")}
        assert results["amd"].ordering == "amd" and results["pord"].ordering == "pord"
        assert results["qamd"].ordering == "qamd"
        for r in results.values():
            assert r.ln_abs_det == pytest.approx(results["amd"].ln_abs_det, rel=1e-11)
        opts = init_petsc().Options("hpcvib_det_")
        opts["mat_mumps_icntl_7"] = 0  # as if given on the command line: AMD
        try:
            assert mumps_logdet(mat, ordering="pord").ordering == "amd"  # the user's option won
            assert opts.getInt("mat_mumps_icntl_7") == 0  # and stays
        finally:
            opts.delValue("mat_mumps_icntl_7")
        # nothing of hpcvib's stays in the options database between solves
        assert not [k for k in init_petsc().Options().getAll() if k.startswith("hpcvib_")]
    finally:
        mat.destroy()


def test_invariances(comm):
    """Pinned atom, permutation of atoms and rigid translation leave ln det' unchanged."""
    atoms = relaxed_fe_vacancy(4)
    ref = log_pseudo_determinant(assemble_hessian(comm, atoms, "Fe_mm")).ln_det_prime
    dh = assemble_hessian(comm, atoms, "Fe_mm")
    for k in (3, 57, len(atoms) - 1):
        assert log_pseudo_determinant(dh, pinned_atom=k).ln_det_prime == pytest.approx(ref, rel=1e-12)
    perm = np.random.default_rng(0).permutation(len(atoms))
    shuffled = atoms[perm]
    assert log_pseudo_determinant(assemble_hessian(comm, shuffled, "Fe_mm")).ln_det_prime == pytest.approx(ref, rel=1e-12)
    moved = atoms.copy()
    moved.positions += [0.37, -1.21, 2.05]
    assert log_pseudo_determinant(assemble_hessian(comm, moved, "Fe_mm")).ln_det_prime == pytest.approx(ref, rel=1e-12)


def test_rank_count_independence(comm):
    from mpi4py import MPI

    atoms = relaxed_fe_vacancy(4)
    a = log_pseudo_determinant(assemble_hessian(comm, atoms, "Fe_mm")).ln_det_prime
    b = log_pseudo_determinant(assemble_hessian(MPI.COMM_SELF, atoms, "Fe_mm")).ln_det_prime
    assert a == pytest.approx(b, rel=1e-12)
    assert comm.allreduce(abs(a - b)) < 1e-9


def _spring_lattice_setfl(path, a, k1, k2, cutoff):
    """An eam/alloy file with F ≡ 0, ρ ≡ 0 and φ(r) = ½k1(r−a)² near a, ½k2(r−√2a)² beyond:
    a simple-cubic harmonic spring lattice. r φ(r) is cubic, which LAMMPS's spline reproduces."""
    nr, dr = 4000, cutoff / 3999
    r = np.arange(nr) * dr
    mid = 0.5 * (1 + np.sqrt(2)) * a
    phi = np.where(r < mid, 0.5 * k1 * (r - a) ** 2, 0.5 * k2 * (r - np.sqrt(2) * a) ** 2)
    with open(path, "w") as fh:
        fh.write("spring lattice\nfor tests\n\n1 Fe\n")
        fh.write(f"100 0.01 {nr} {dr:.16e} {cutoff:.16e}\n26 55.845 {a} sc\n")
        fh.write("\n".join(["0.0"] * 100) + "\n")
        fh.write("\n".join(["0.0"] * nr) + "\n")
        fh.write("\n".join(f"{v:.17e}" for v in r * phi) + "\n")


def test_harmonic_spring_lattice_analytic(comm, tmp_path):
    """Simple cubic lattice, nearest and next-nearest central springs: D(q) = (1/m) Σ_R k_R
    (1 − cos q·R) û ûᵀ, diagonalised per Bloch vector q (an independent, analytic route)."""
    from ase import Atoms

    a, k1, k2, L = 2.5, 3.0, 1.2, 4
    path = comm.bcast(str(tmp_path / "springs.eam.alloy"), root=0)  # tmp_path differs per rank
    if comm.rank == 0:
        _spring_lattice_setfl(path, a, k1, k2, cutoff=1.6 * a)
    comm.Barrier()
    grid = np.array([[i, j, k] for i in range(L) for j in range(L) for k in range(L)], float) * a
    atoms = Atoms(f"Fe{len(grid)}", positions=grid, cell=[L * a] * 3, pbc=True)
    pd = log_pseudo_determinant(assemble_hessian(comm, atoms, str(path)))
    m = atoms.get_masses()[0]
    bonds = [(np.array(v, float), k1) for v in np.eye(3)] + \
            [(np.array(v, float) / np.sqrt(2), k2) for v in
             [(1, 1, 0), (1, -1, 0), (1, 0, 1), (1, 0, -1), (0, 1, 1), (0, 1, -1)]]
    ln_det = 0.0
    for n in np.ndindex(L, L, L):
        q = 2 * np.pi * np.array(n) / (L * a)
        Dq = sum(2 * kk * (1 - np.cos(q @ (u * a * (np.sqrt(2) if kk == k2 else 1)))) * np.outer(u, u)
                 for u, kk in bonds) / m
        w = np.linalg.eigvalsh(Dq)
        if n == (0, 0, 0):
            assert np.allclose(w, 0)
            continue
        ln_det += np.sum(np.log(w))
    assert pd.ln_det_prime == pytest.approx(ln_det, rel=1e-10)


def test_saddle_has_one_negative_mode_and_prefactor_matches_dense(comm):
    saddle = fe_vacancy_saddle(4)
    minimum = relaxed_fe_vacancy(4)
    pot = load_potential("Fe_mm")
    s = analyse_structure(comm, saddle, pot, "saddle", expect="saddle")
    m = analyse_structure(comm, minimum, pot, "minimum", expect="minimum")
    assert s.n_negative == 1 and s.kind == "saddle"
    ev_s = scipy.linalg.eigvalsh(dense_D(saddle, "Fe_mm"))
    ev_m = scipy.linalg.eigvalsh(dense_D(minimum, "Fe_mm"))
    assert s.lowest_eigenvalues[0] == pytest.approx(ev_s[0], rel=1e-9)
    ln_nu = ln_attack_frequency(m.ln_det_prime, s.ln_det_prime, s.lowest_eigenvalues[0])
    # Vineyard product straight from the dense frequencies, Eq. 24
    nu_m = NU_UNIT_THZ * np.sqrt(nonzero(ev_m))
    stable_s = np.sort(ev_s)[1:]
    nu_s = NU_UNIT_THZ * np.sqrt(nonzero(stable_s))
    ref = np.sum(np.log(nu_m)) - np.sum(np.log(nu_s))
    assert ln_nu == pytest.approx(ref, rel=1e-9)
    barrier = s.energy - m.energy
    assert 0.5 < barrier < 0.8  # Mendelev Fe vacancy migration ≈ 0.64 eV
    assert htst_rate(ln_nu, barrier, 600.0) == pytest.approx(np.exp(ref) * 1e12 * np.exp(-barrier / (8.617333262e-5 * 600)), rel=1e-9)


def test_formation_entropy_of_relaxed_vacancy_against_dense(comm):
    defect = relaxed_fe_vacancy(4)
    bulk = bcc_supercell(4, fe_a0())
    pot = load_potential("Fe_mm")
    d = analyse_structure(comm, defect, pot, "vacancy", expect="minimum")
    b = analyse_structure(comm, bulk, pot, "bulk", expect="minimum")
    s_f, conv = formation_entropy(d.ln_det_prime, len(defect), b.ln_det_prime, len(bulk))
    assert conv == "Eq20"
    # Eq. 20 straight from the dense frequencies: ln(Π (ħω_b)^{N'/N_b} / Π ħω_d)
    hw_d = HBAR_OMEGA_UNIT_EV * np.sqrt(nonzero(scipy.linalg.eigvalsh(dense_D(defect, "Fe_mm"))))
    hw_b = HBAR_OMEGA_UNIT_EV * np.sqrt(nonzero(scipy.linalg.eigvalsh(dense_D(bulk, "Fe_mm"))))
    ref = len(defect) / len(bulk) * np.sum(np.log(hw_b)) - np.sum(np.log(hw_d))
    assert s_f == pytest.approx(ref, abs=1e-6)
    # Eq. 19 at T from dense S_vib of both cells
    T = 500.0
    s19, conv19 = formation_entropy(d.ln_det_prime, len(defect), b.ln_det_prime, len(bulk), T)
    kT = 8.617333262e-5 * T
    S = lambda hw: np.sum(np.log(kT / hw) + 1)
    assert s19 == pytest.approx(S(hw_d) - len(defect) / len(bulk) * S(hw_b), abs=1e-6)
    assert conv19.startswith("Eq19")
    assert vibrational_entropy(d.ln_det_prime, len(defect), T) == pytest.approx(S(hw_d), rel=1e-10)


def test_lowest_modes_complete_for_degenerate_spectrum(comm):
    """Perfect bcc: highly degenerate low modes; SLEPc + inertia check finds every copy."""
    atoms = bcc_supercell(4, fe_a0())
    dh = assemble_hessian(comm, atoms, "Fe_mm")
    modes = lowest_modes(dh, k=12)
    ev = scipy.linalg.eigvalsh(dense_D(atoms, "Fe_mm"))
    assert np.allclose(modes.eigenvalues, ev[:12], atol=1e-8)
    assert np.all(modes.residuals < 1e-6)


def test_spectrum_slicing_matches_dense(comm):
    from test_potentials import random_si
    from hpcvib.potentials.calculator import HpcvibCalculator
    from ase.optimize import BFGS

    atoms = random_si(32)
    atoms.calc = HpcvibCalculator("Si_sw_vink")
    BFGS(atoms, logfile=None).run(fmax=1e-8, steps=3000)
    atoms.calc = None
    dh = assemble_hessian(comm, atoms, "Si_sw_vink")
    sliced = full_spectrum(dh, "slicing")
    dense = full_spectrum(dh, "dense")
    assert np.allclose(sliced, dense, atol=1e-9)


def test_wrong_inertia_is_a_clear_error(comm):
    saddle = fe_vacancy_saddle(4)
    with pytest.raises(NotAMinimumError, match="expected a minimum.*1 negative eigenvalue"):
        analyse_structure(comm, saddle, load_potential("Fe_mm"), "saddle.xyz", expect="minimum")
    with pytest.raises(NotAMinimumError, match="expected a first-order saddle.*0 negative"):
        analyse_structure(comm, relaxed_fe_vacancy(4), load_potential("Fe_mm"), "min.xyz", expect="saddle")


def test_singular_dynamical_matrix_is_an_error(comm):
    """Two far-apart atoms in a big cell do not interact: 6 zero modes, not 3."""
    from ase import Atoms

    atoms = Atoms("Fe2", positions=[[0, 0, 0], [10, 10, 10]], cell=[20, 20, 20], pbc=True)
    with pytest.raises(HpcvibError, match="singular beyond the 3 translations"):
        log_pseudo_determinant(assemble_hessian(comm, atoms, "Fe_mm"))


def test_quantum_harmonic_thermodynamics_consistency():
    """S = −∂F/∂T (central differences of F) and the classical limit S_q → S_cl at high T."""
    from hpcvib.physics.thermo import quantum_harmonic

    rng = np.random.default_rng(0)
    lam = np.concatenate([np.zeros(3), rng.uniform(0.01, 0.3, 300)])
    for T in (100.0, 500.0):
        h = 1e-3
        f_plus, _ = quantum_harmonic(lam, T + h)
        f_minus, _ = quantum_harmonic(lam, T - h)
        _, s = quantum_harmonic(lam, T)
        assert s == pytest.approx(-(f_plus - f_minus) / (2 * h) / 8.617333262e-5, rel=1e-7)
    ln_det = np.sum(np.log(lam[3:]))
    T = 1e5  # ħω/kT ~ 1e-3: quantum and classical entropies agree to O((ħω/kT)²)
    _, s_q = quantum_harmonic(lam, T)
    s_cl = (len(lam) - 3) * (1 + np.log(8.617333262e-5 * T / HBAR_OMEGA_UNIT_EV)) - 0.5 * ln_det
    assert s_q == pytest.approx(s_cl, abs=1e-3)


def test_higher_order_saddle_is_an_error(comm):
    """An inertia of 2 or more is refused even when no kind is expected."""
    from hpcvib.physics.thermo import StructureAnalysis, check_kind

    fake = StructureAnalysis("two.xyz", 10, 0.0, 0.0, 0.0, 2, np.array([-0.2, -0.1, 0.0]), None, 0, {}, {})
    with pytest.raises(NotAMinimumError, match="higher-order saddle.*2 negative.*-0.2, -0.1"):
        check_kind(fake, None)
    check_kind(StructureAnalysis("s.xyz", 10, 0.0, 0.0, 0.0, 1, np.array([-0.2]), None, 0, {}, {}), None)


def test_mismatched_minimum_and_saddle_are_refused():
    from hpcvib.errors import InputError
    from hpcvib.physics.thermo import check_same_system

    m = relaxed_fe_vacancy(4)
    with pytest.raises(InputError, match="s.xyz: 126 atoms, but minimum m.xyz has 127"):
        check_same_system(m, m[:-1], "m.xyz", "s.xyz")
    other = m.copy()
    other.symbols[3] = "Cr"
    with pytest.raises(InputError, match="species differ"):
        check_same_system(m, other, "m.xyz", "s.xyz")
    strained = m.copy()
    strained.set_cell(np.asarray(m.get_cell()) * 1.01, scale_atoms=True)
    with pytest.raises(InputError, match="cell differs"):
        check_same_system(m, strained, "m.xyz", "s.xyz")


@pytest.mark.parametrize("lattice, reps, strain", [("bcc", (4, 4, 4), 0.0), ("bcc", (2, 3, 4), 0.01),
                                                   ("bcc", (3, 3, 3), -0.01), ("fcc", (3, 3, 3), 0.0),
                                                   ("fcc", (2, 3, 4), 0.01)])
def test_bloch_ln_det_prime_of_perfect_crystals(comm, lattice, reps, strain):
    """Perfect bcc and fcc cells (cubic and not, strained; Fe_mm's fcc lattice is metastable):
    Bloch sums over the commensurate q-points against dense eigvalsh of the whole cell, and
    against the sparse factorisation; the host detected from the cell is the one built."""
    from hpcvib.geometry.structures import cubic_reference_parameters, cubic_supercell
    from hpcvib.physics.thermo import bloch_ln_det_prime
    from hpcvib.potentials import lattice_constant

    pot = load_potential("Fe_mm")
    a = (fe_a0() if lattice == "bcc" else lattice_constant(pot, "fcc")) * (1.0 + strain)
    atoms = cubic_supercell(lattice, reps, a)
    detected = cubic_reference_parameters(atoms)
    assert detected[:2] == (lattice, reps) and detected[2] == pytest.approx(a, rel=1e-12)
    ln_bloch, lowest = bloch_ln_det_prime(pot, atoms, lattice, reps, a)
    ev = np.sort(scipy.linalg.eigvalsh(dense_D(atoms, "Fe_mm")))
    assert ln_bloch == pytest.approx(np.sum(np.log(nonzero(ev))), rel=1e-12)
    assert lowest == pytest.approx(nonzero(ev)[0], rel=1e-9)
    pd = log_pseudo_determinant(assemble_hessian(comm, atoms, "Fe_mm"))
    assert ln_bloch == pytest.approx(pd.ln_det_prime, rel=1e-12)


def test_host_detection_of_defect_cells():
    """The perfect reference of a defect cell: bcc for relaxed bcc vacancy and di-interstitial
    cells, fcc for an fcc vacancy (any repetitions); a diamond or sheared cell is refused with a
    request for an explicit reference."""
    from hpcvib.errors import InputError
    from hpcvib.geometry.defects import DefectSpec, build_defect, dumbbell_clusters
    from hpcvib.geometry.structures import cubic_reference_parameters, cubic_supercell, diamond_supercell

    a0 = fe_a0()
    vacancy = relaxed_fe_vacancy(4)
    assert cubic_reference_parameters(vacancy)[:2] == ("bcc", (4, 4, 4))
    assert cubic_reference_parameters(vacancy)[2] == pytest.approx(a0, rel=1e-12)
    di = build_defect(DefectSpec("I", 2, "110", 0, dumbbell_clusters(2, "110", 2)[0], 0), 4, a0)
    assert cubic_reference_parameters(di)[:2] == ("bcc", (4, 4, 4))
    fcc = cubic_supercell("fcc", (2, 3, 4), 3.6)
    del fcc[5]
    fcc.rattle(0.05, seed=1)
    assert cubic_reference_parameters(fcc) == ("fcc", (2, 3, 4), pytest.approx(3.6, rel=1e-12))
    with pytest.raises(InputError, match="neither bcc nor fcc"):
        cubic_reference_parameters(diamond_supercell(2, 5.43), "dia.xyz")
    sheared = vacancy.copy()
    sheared.set_cell(np.asarray(vacancy.cell) + np.array([[0, 0.5, 0], [0, 0, 0], [0, 0, 0]]))
    with pytest.raises(InputError, match="orthogonal"):
        cubic_reference_parameters(sheared, "sheared.xyz")


def test_rejections_are_cheap_and_check_forces():
    """--expect minimum refuses a non-stationary cell before factorising, and a cell with many
    negative eigenvalues after computing only a few of them (the inertia already proved it)."""
    from mpi4py import MPI

    from hpcvib.errors import NotAMinimumError
    from hpcvib.geometry.structures import bcc_supercell
    from hpcvib.physics.thermo import MODES_IN_REJECTION, analyse_structure
    from hpcvib.potentials import load_potential

    from conftest import fe_a0

    pot = load_potential("Fe_mm")
    atoms = bcc_supercell(4, fe_a0())
    atoms.positions += np.random.default_rng(4).normal(0, 0.05, atoms.positions.shape)
    with pytest.raises(NotAMinimumError, match="largest force"):
        analyse_structure(MPI.COMM_SELF, atoms, pot, "rattled", expect="minimum")
    atoms.positions += np.random.default_rng(5).normal(0, 0.25, atoms.positions.shape)
    with pytest.raises(NotAMinimumError, match="…") as err:
        analyse_structure(MPI.COMM_SELF, atoms, pot, "rattled", expect="minimum", force_tol=1e3)
    shown = str(err.value).split("eigenvalue(s): ")[1].split(" eV")[0].split(", ")
    assert len([x for x in shown if x != "…"]) <= MODES_IN_REJECTION
