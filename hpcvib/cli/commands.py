"""Command-line interface: ``hpcvib <command> ...`` (also under ``mpiexec -n P hpcvib ...``).

Each command is a class with ``add_arguments(parser)`` and ``run(args, comm)``; the first line of
its docstring is the short help (ASE ``cli/main.py`` style). Heavy imports happen inside ``run``
so ``--help`` stays fast. User errors print one line ``hpcvib: error: ...`` and exit with status
2; an unexpected exception on any rank aborts the whole MPI job instead of leaving ranks waiting.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np

from hpcvib import __version__
from hpcvib.batches import ItemFailures
from hpcvib.geometry.structures import load_structures
from hpcvib.parallel import collective_call


# ------------------------------------------------------------------------------------------
# helpers shared by the commands
# ------------------------------------------------------------------------------------------
def add_potential_argument(parser):
    parser.add_argument("--potential", "-p", required=True, metavar="P",
                        help="built-in name (Fe_mm, Si_sw, Si_sw_vink) or potential file "
                             "(*.eam.fs, *.eam.alloy, *.sw)")


def add_solver_arguments(parser):
    parser.add_argument("--solver", default="auto", choices=["auto", "mumps", "cholmod", "mumps-metis"],
                        help="sparse factorisation for ln det': auto = CHOLMOD supernodal Cholesky "
                             "(nested dissection) on one process when its factor fits in memory, else "
                             "(and for saddles) mumps-metis = sequential MUMPS with METIS and discarded "
                             "factors; mumps = PETSc's MUMPS LDLᵀ over the ranks")
    parser.add_argument("--memory-limit", type=float, metavar="MB",
                        help="memory a factorisation may plan to use (default 90 %% of the available "
                             "memory); a matrix whose symbolic analysis needs more is refused before any "
                             "numerical work")
    parser.add_argument("--ordering", default="auto",
                        choices=["auto", "nesdis", "metis", "amd", "amf", "pord", "qamd"],
                        help="fill-reducing ordering: CHOLMOD nesdis (default), metis, amd; "
                             "MUMPS (Debian: no METIS) amd, amf, pord, qamd; auto picks")


def add_format_argument(parser):
    parser.add_argument("--format", dest="file_format", metavar="FMT", default=None,
                        help="ASE format of the structure files when the suffix does not tell "
                             "(e.g. lammps-data, vasp)")
    parser.add_argument("--types", metavar="EL[,EL...]", default=None,
                        help="element of each LAMMPS atom type, in type order (--types Fe,Cr: type 1 is Fe, "
                             "type 2 Cr), for data files without Masses and dumps with a type column only")


def add_keep_going_argument(parser):
    parser.add_argument("--keep-going", action="store_true",
                        help="process every good structure and report each bad one with its reason "
                             "(JSON line with --json) instead of stopping at the first; exit status 3 "
                             "when some failed")


def emit_json(comm, obj, stream=None):
    """Print one JSON object (one line) on rank 0: valid JSON only — a missing or undefined
    number (NaN, ±inf) is ``null``, which jq and strict parsers accept."""
    if comm.rank == 0:
        print(json.dumps(json_safe(obj), default=_json_default, allow_nan=False), file=stream or sys.stdout,
              flush=True)


def write_extxyz(comm, path: str, frames) -> None:
    """Write ``frames`` (an Atoms or a list) to ``path`` as extxyz, atomically, on rank 0."""
    from hpcvib.parallel import root_only

    def write():
        from ase.io import write as ase_write

        from hpcvib.fileio import atomic_output
        with atomic_output(path) as tmp:
            ase_write(tmp, frames, format="extxyz")
    root_only(comm, write)


def json_safe(obj):
    """``obj`` with every non-finite float (also inside numpy arrays and scalars) as None."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------
class HessianCommand:
    """Assemble the analytic sparse Hessian of a structure and write it to a file.

    The matrix is 3N×3N in the original atom order, H in eV/Å² (or the dynamical matrix
    D = M^-1/2 H M^-1/2 in eV/(Å² amu) with --mass-weighted). The format follows the suffix of
    -o: .npz (scipy CSR), .mtx (Matrix Market), .petsc/.bin/.dat (PETSc binary, AIJ).
    """

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("structure", help="structure file (any format ASE reads)")
        add_potential_argument(parser)
        parser.add_argument("-o", "--output", required=True, help="output matrix file")
        parser.add_argument("--frame", type=int, default=0, help="frame of a multi-frame file (default 0)")
        parser.add_argument("--mass-weighted", action="store_true",
                            help="write D = M^-1/2 H M^-1/2 (eV/(Å² amu)) instead of H (eV/Å²)")
        parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
        add_format_argument(parser)

    @staticmethod
    def run(args, comm):
        from hpcvib.errors import InputError
        from hpcvib.linalg.hessian import assemble_hessian
        from hpcvib.linalg.matrixio import matrix_format, write_matrix
        from hpcvib.log import get_logger, timed
        from hpcvib.parallel import root_only
        from hpcvib.potentials import load_potential

        log = get_logger()
        matrix_format(args.output)  # fail early on a bad suffix ...
        from hpcvib.fileio import check_writable

        root_only(comm, check_writable, args.output)  # ... and on an unwritable place
        timings = {}
        with timed("read", timings):
            frames = load_structures(comm, [args.structure], args.file_format, types=args.types)
        if not -len(frames) <= args.frame < len(frames):
            raise InputError(f"{args.structure}: frame {args.frame} requested, file has {len(frames)}")
        label, atoms = frames[args.frame]
        pot = collective_call(comm, load_potential, args.potential)
        pot.species_index(atoms, label)
        log.info("%s: %d atoms, potential %s", label, len(atoms), pot.describe())
        with timed("assemble", timings):
            dh = assemble_hessian(comm, atoms, pot)
        with timed("gather", timings):
            mat = dh.gather_scipy(mass_weighted=args.mass_weighted)
        units = "eV/(A^2 amu)" if args.mass_weighted else "eV/A^2"
        comment = f"hpcvib {__version__} {'D' if args.mass_weighted else 'H'} [{units}] of {label}, potential {pot.name}"
        with timed("write", timings):
            root_only(comm, write_matrix, args.output, mat, comment)
        if args.json:
            emit_json(comm, {"structure": label, "n_atoms": len(atoms), "potential": pot.name,
                             "matrix": "D" if args.mass_weighted else "H", "units": units,
                             "output": args.output, "nnz": None if mat is None else int(mat.nnz),
                             "ranks": comm.size, "timings_s": timings})
        log.info("wrote %s (%s)", args.output, units)


class ThermoCommand:
    """Exact harmonic thermodynamics of one or more structures (minima or saddles).

    One sparse LDLᵀ factorisation (MUMPS) of the dynamical matrix with one atom's rows removed
    gives ln det'(D) exactly and the inertia (number of negative eigenvalues), THEORY §3; from
    them S_vib (Eq. 2) at --temperature and the formation entropy S_f against a perfect cell at
    the same strain (Eq. 20, or Eq. 19 when a temperature is given). Several files, globs or
    multi-frame files give one result each (JSON lines with --json).
    """

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("structures", nargs="+", metavar="STRUCTURE",
                            help="structure files, globs or multi-frame files")
        add_potential_argument(parser)
        parser.add_argument("--reference", metavar="BULK",
                            help="perfect cell at the same strain for S_f (a file), or 'auto' to "
                                 "build the bcc cell of the same shape")
        parser.add_argument("--temperature", "-t", type=float, metavar="T",
                            help="temperature (K) for S_vib, Eq. 19 and quantum quantities")
        parser.add_argument("--modes", type=int, default=0, metavar="K",
                            help="report the K lowest eigenvalues of D (SLEPc, shift-and-invert)")
        parser.add_argument("--spectrum", action="store_true",
                            help="full spectrum: DOS histogram, quantum F and S at T (dense LAPACK "
                                 "for small cells, SLEPc spectrum slicing otherwise)")
        parser.add_argument("--spectrum-method", choices=["auto", "dense", "slicing"], default="auto")
        parser.add_argument("--dos-plot", metavar="PNG", help="write the vibrational DOS plot (with --spectrum)")
        parser.add_argument("--expect", choices=["minimum", "saddle"],
                            help="error unless every structure is of this kind (inertia, and forces below --force-tol)")
        parser.add_argument("--force-tol", type=float, default=1e-3, metavar="F",
                            help="largest force (eV/Å) of a stationary point, checked with --expect/--reference "
                                 "before any factorisation (default 1e-3)")
        parser.add_argument("--local", action="store_true",
                            help="exact per-atom entropies (site decomposition of Eq. 2): S_local_kB at "
                                 "--temperature and, with --reference, the local formation entropy dS_local_kB "
                                 "(sums to S_f, Eq. 20); written with -o")
        parser.add_argument("--local-route", choices=["auto", "dense", "quadrature"], default="auto",
                            help="dense: every eigenpair (LAPACK, ≤ 4 000 atoms); quadrature: Lanczos "
                                 "Gauss/Gauss–Radau brackets per atom, O(N) memory; auto: dense up to 2 000 atoms")
        parser.add_argument("--local-radius", type=float, metavar="R",
                            help="quadrature route: only atoms within R Å of the defect (atoms whose energy is "
                                 "unlike the host's); the others take the perfect crystal's value (needs "
                                 "--reference; the far-field remainder S_f − Σ dS_i is reported)")
        parser.add_argument("--local-tol", type=float, default=1e-8, metavar="TOL",
                            help="quadrature route: bound on the error of each S_i, k_B (default 1e-8, so that sums over 10^5 atoms stay within 1e-3)")
        parser.add_argument("--no-local-symmetry", action="store_true",
                            help="quadrature route: evaluate every atom, not one per orbit of the structure's "
                                 "own symmetry operations")
        parser.add_argument("-o", "--output", metavar="OUT.extxyz",
                            help="with --local: the structures with per-atom arrays S_local_kB / dS_local_kB (OVITO)")
        add_solver_arguments(parser)
        parser.add_argument("--json", action="store_true", help="one JSON object per structure on stdout")
        add_keep_going_argument(parser)
        add_format_argument(parser)

    @staticmethod
    def run(args, comm):
        from hpcvib.linalg.hessian import assemble_hessian
        from hpcvib.physics.thermo import analyse_structure
        from hpcvib.potentials import load_potential

        from hpcvib.errors import InputError

        if args.modes < 0:
            raise InputError(f"--modes must be ≥ 0 (got {args.modes})")
        if args.temperature is not None and args.temperature <= 0:
            raise InputError(f"--temperature must be positive (got {args.temperature} K)")
        if args.output and not args.local:
            raise InputError("-o/--output writes per-atom entropies: add --local")
        if args.dos_plot and not args.spectrum:
            raise InputError("--dos-plot draws the full spectrum: add --spectrum")
        from hpcvib.fileio import check_writable

        for out in (args.dos_plot, args.output):
            if out:
                check_writable(out)
        if args.local and args.temperature is None and not args.reference:
            raise InputError("--local needs --temperature (for S_local) or --reference (for dS_local)")
        if args.local_radius is not None and not (args.local and args.reference):
            raise InputError("--local-radius gives far atoms the perfect crystal's value: add --local and --reference")
        if args.local_radius is not None and args.local_route == "dense":
            raise InputError("--local-radius selects atoms for the quadrature route: use --local-route quadrature|auto")
        if args.local_tol <= 0:
            raise InputError(f"--local-tol must be positive (got {args.local_tol})")
        pot = collective_call(comm, load_potential, args.potential)
        failures = ItemFailures(comm, args.keep_going, args.json)
        frames = failures.good(load_structures(comm, args.structures, args.file_format, types=args.types,
                                               keep_going=args.keep_going))
        references = {}
        local_frames = []
        expect = "minimum" if args.reference else args.expect

        def one(label, atoms):
            if args.modes > 3 * len(atoms) - 3:
                raise InputError(f"{label}: --modes {args.modes}, but D has only 3N − 3 = {3 * len(atoms) - 3} "
                                 "non-zero eigenvalues (use --spectrum for all of them)")
            pot.species_index(atoms, label)
            dh = assemble_hessian(comm, atoms, pot)
            res = analyse_structure(comm, atoms, pot, label, n_modes=args.modes, expect=expect,
                                    ordering=args.ordering, hessian=dh, solver=args.solver, force_tol=args.force_tol)
            out = res.to_dict()
            out["potential"] = pot.name
            if args.temperature is not None:
                from hpcvib.physics.thermo import vibrational_entropy

                out["temperature_K"] = args.temperature
                out["S_vib_kB"] = vibrational_entropy(res.ln_det_prime, res.n_atoms, args.temperature)
            if args.reference:
                out.update(_formation_entropy(comm, pot, label, atoms, res, args, references))
            if args.spectrum:
                out.update(_spectrum(comm, dh, res, args, label))
            if args.local:
                out["local"] = _local_entropies(comm, pot, atoms, dh, out, args, local_frames, label)
            return out

        for label, atoms in frames:
            out, ok = failures.run(label, lambda: one(label, atoms))
            if ok:
                _report(comm, out, args.json)
        if args.output:
            from hpcvib.learning.prediction import _write_extxyz
            from hpcvib.parallel import root_only

            root_only(comm, _write_extxyz, args.output, local_frames)
        failures.finish()


def _local_entropies(comm, pot, atoms, dh, out, args, frames, label) -> dict:
    """Per-atom S_i (and ΔS_i against the reference) of one structure, with the sum checks
    against the factorisation route; the annotated copy is appended to ``frames``."""
    from hpcvib.physics.local_entropy import FAR_FIELD_TOL_KB, far_field_remainder
    from hpcvib.workflow.local_entropies import choose_local_route, local_decomposition

    route = choose_local_route(args.local_route, len(atoms), args.local_radius)
    dec = local_decomposition(dh, pot, atoms, route, args.local_radius, args.local_tol,
                              symmetry=not args.no_local_symmetry)
    annotated = atoms.copy()
    annotated.info["structure"] = label
    checks = {"route": route, "atoms_computed": int(len(atoms) if dec.computed is None else dec.computed.sum()),
              "ln_det_prime_factorisation": out["ln_det_prime"]}
    if dec.all_computed:
        checks["sum_L_local"] = float(np.sum(dec.log_diagonal))
    if dec.error_bound is not None:
        checks.update(max_error_bound_kB=float(dec.error_bound.max()), quadratures=dec.evaluated_atoms,
                      lanczos_steps=dec.lanczos_steps)
    if args.reference:
        ref = out["reference"]
        dec = dec.with_far_field(ref["ln_det_prime"], ref["n_atoms"])
        ds = dec.formation(ref["ln_det_prime"], ref["n_atoms"])
        annotated.arrays["dS_local_kB"] = ds
        s_f = _eq20(out)
        checks.update(sum_dS_local_kB=float(ds.sum()), S_f_Eq20_kB=s_f, max_dS_local_kB=float(ds.max()),
                      min_dS_local_kB=float(ds.min()))
        if not dec.all_computed:
            remainder = far_field_remainder(ds, s_f)
            checks.update(local_radius_A=args.local_radius, far_field_remainder_kB=remainder)
            if abs(remainder) > FAR_FIELD_TOL_KB:
                from hpcvib.log import get_logger

                get_logger("thermo").warning("%s: far-field remainder S_f − Σ dS_i = %.2e k_B exceeds %.0e k_B: "
                                             "a larger --local-radius is needed", label, remainder, FAR_FIELD_TOL_KB)
    if args.temperature is not None:
        s_local = dec.entropy(args.temperature)
        annotated.arrays["S_local_kB"] = s_local
        checks.update(sum_S_local_kB=float(s_local.sum()), S_vib_kB=out.get("S_vib_kB"))
    frames.append(annotated)
    return checks


def _eq20(out) -> float:
    """S_f of this result in the Eq. 20 convention (the thermo result may be Eq. 19)."""
    from hpcvib.physics.thermo import formation_entropy

    ref = out["reference"]
    return formation_entropy(out["ln_det_prime"], out["n_atoms"], ref["ln_det_prime"], ref["n_atoms"])[0]


def _formation_entropy(comm, pot, label, atoms, res, args, cache):
    """S_f against the reference cell; each distinct reference is analysed once (``cache``)."""
    from hpcvib.errors import InputError
    from hpcvib.parallel import collective_call
    from hpcvib.parallel import root_only
    from hpcvib.physics.thermo import (analyse_perfect_crystal, analyse_structure, formation_energy, formation_entropy,
                         perfect_cubic_reference)

    if args.reference == "auto":
        key = ("auto", tuple(np.round(np.asarray(atoms.get_cell()).ravel(), 8)), atoms.get_chemical_symbols()[0])
    else:
        key = args.reference
    if key not in cache:
        if args.reference == "auto":
            ref_atoms = root_only(comm, perfect_cubic_reference, atoms, label)
            ref_label = f"auto {ref_atoms.info['builder'].split()[0]}"
        else:
            ref_label, ref_atoms = load_structures(comm, [args.reference], args.file_format, types=args.types)[0]
        cache[key] = (np.asarray(ref_atoms.get_cell()), ref_label, ref_atoms, None)
    ref_cell, ref_label, ref_atoms, ref = cache[key]
    if not np.allclose(ref_cell, np.asarray(atoms.get_cell()), atol=1e-6):
        raise InputError(f"{ref_label}: reference cell differs from the cell of {label} "
                         f"(S_f needs the same strain and volume)")
    if ref is None and args.reference == "auto":
        # a perfect Bravais crystal: exact ln det' by Bloch sums, O(N), no factorisation
        ref = collective_call(comm, analyse_perfect_crystal, pot, ref_atoms, ref_label)
        cache[key] = (ref_cell, ref_label, ref_atoms, ref)
    elif ref is None:
        ref = analyse_structure(comm, ref_atoms, pot, ref_label, expect="minimum", ordering=args.ordering,
                                solver=args.solver)
        cache[key] = (ref_cell, ref_label, ref_atoms, ref)
    s_f, convention = formation_entropy(res.ln_det_prime, res.n_atoms, ref.ln_det_prime, ref.n_atoms,
                                        args.temperature)
    return {"S_f_kB": s_f, "S_f_convention": convention,
            "reference": {"structure": ref.label, "n_atoms": ref.n_atoms, "ln_det_prime": ref.ln_det_prime,
                          "energy_eV": ref.energy, "method": ref.factorisation["solver"]},
            "E_f_eV": formation_energy(res.energy, res.n_atoms, ref.energy, ref.n_atoms)}


def _spectrum(comm, dh, res, args, label):
    from hpcvib.linalg.spectral import full_spectrum
    from hpcvib.physics.thermo import density_of_states, quantum_harmonic, without_zero_modes

    vals = full_spectrum(dh, args.spectrum_method)
    edges, counts = density_of_states(vals)
    out = {"spectrum": {"method": args.spectrum_method, "n_eigenvalues": len(vals),
                        "ln_det_prime_from_eigenvalues": float(np.sum(np.log(np.abs(without_zero_modes(vals))))),
                        "dos_edges_THz": edges.tolist(), "dos_counts": counts.tolist()}}
    if args.temperature is not None and res.n_negative == 0:
        free, entropy = quantum_harmonic(vals, args.temperature)
        out["quantum"] = {"temperature_K": args.temperature, "F_vib_eV": free, "S_vib_kB": entropy}
    if args.dos_plot and comm.rank == 0:
        _plot_dos(args.dos_plot, edges, counts, label)
    return out


def _plot_dos(path, edges, counts, label):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    width = np.diff(edges)
    ax.bar(edges[:-1], counts / (counts.sum() * width), width=width, align="edge", color="tab:blue")
    ax.set_xlabel("frequency (THz)")
    ax.set_ylabel("DOS (1/THz)")
    ax.set_title(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _report(comm, out, as_json):
    if as_json:
        emit_json(comm, out)
        return
    if comm.rank != 0:
        return
    parts = [f"{out['structure']}: {out['kind']}", f"N={out['n_atoms']}", f"E={out['energy_eV']:.6f} eV",
             f"ln det'(D)={out['ln_det_prime']:.10f}"]
    if "S_vib_kB" in out:
        parts.append(f"S_vib={out['S_vib_kB']:.6f} kB @ {out['temperature_K']:g} K")
    if "S_f_kB" in out:
        parts.append(f"S_f={out['S_f_kB']:.6f} kB ({out['S_f_convention']})")
    if len(out.get("lowest_eigenvalues", [])):
        parts.append("lowest λ=" + " ".join(f"{v:.4g}" for v in out["lowest_eigenvalues"]))
    print(", ".join(parts), flush=True)


class PrefactorCommand:
    """Vineyard attack frequency, barrier and harmonic-TST rate of minimum → saddle events.

    ln(ν*/1 THz) = ½ ln det'(D_m) − ½ (ln|det'(D_s)| − ln|λ_neg|) + ln NU_UNIT_THZ (Eq. 24–25),
    exact from two MUMPS factorisations; λ_neg from SLEPc. ΔE = U(s) − U(m); R = ν* e^{−ΔE/k_BT}
    (Eq. 23). One minimum and one or more saddles (files, globs or multi-frame files).
    """

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("minimum", help="minimum structure")
        parser.add_argument("saddles", nargs="+", metavar="SADDLE", help="first-order saddle structure(s)")
        add_potential_argument(parser)
        parser.add_argument("--temperature", "-t", type=float, nargs="+", default=[300.0], metavar="T",
                            help="temperatures (K) for the rate (default 300)")
        add_solver_arguments(parser)
        parser.add_argument("--json", action="store_true", help="one JSON object per saddle on stdout")
        add_keep_going_argument(parser)
        add_format_argument(parser)

    @staticmethod
    def run(args, comm):
        from hpcvib.physics.thermo import analyse_structure, check_same_system, frequencies_thz, htst_rate, ln_attack_frequency
        from hpcvib.potentials import load_potential

        pot = collective_call(comm, load_potential, args.potential)
        failures = ItemFailures(comm, args.keep_going, args.json)
        (label_m, atoms_m), = load_structures(comm, [args.minimum], args.file_format, types=args.types)[:1]
        saddles = failures.good(load_structures(comm, args.saddles, args.file_format, types=args.types,
                                                keep_going=args.keep_going))
        pot.species_index(atoms_m, label_m)
        m = analyse_structure(comm, atoms_m, pot, label_m, expect="minimum", ordering=args.ordering,
                              solver=args.solver)

        def saddle(label_s, atoms_s):
            check_same_system(atoms_m, atoms_s, label_m, label_s)
            return analyse_structure(comm, atoms_s, pot, label_s, expect="saddle", ordering=args.ordering)

        for label_s, atoms_s in saddles:
            s, ok = failures.run(label_s, lambda: saddle(label_s, atoms_s))
            if not ok:
                continue
            lam = float(s.lowest_eigenvalues[0])
            ln_nu = ln_attack_frequency(m.ln_det_prime, s.ln_det_prime, lam)
            d_e = s.energy - m.energy
            rates = [htst_rate(ln_nu, d_e, t) for t in args.temperature]
            out = {"minimum": label_m, "saddle": label_s, "n_atoms": m.n_atoms, "potential": pot.name,
                   "energy_minimum_eV": m.energy, "energy_saddle_eV": s.energy, "delta_E_eV": d_e,
                   "ln_det_prime_minimum": m.ln_det_prime, "ln_abs_det_prime_saddle": s.ln_det_prime,
                   "lambda_neg": lam, "nu_imaginary_THz": float(-frequencies_thz(lam)),
                   "ln_nu_THz": ln_nu, "nu_THz": float(np.exp(ln_nu)),
                   "temperatures_K": list(args.temperature), "rate_per_s": rates,
                   "timings_s": {"minimum": m.timings, "saddle": s.timings}}
            if args.json:
                emit_json(comm, out)
            elif comm.rank == 0:
                rate_txt = ", ".join(f"R({t:g} K)={r:.4e}/s" for t, r in zip(args.temperature, rates))
                print(f"{label_s}: ΔE={d_e:.6f} eV, ln(ν*/THz)={ln_nu:.8f}, ν*={np.exp(ln_nu):.6g} THz, "
                      f"λ_neg={lam:.6g} eV/(Å² amu), {rate_txt}", flush=True)
        failures.finish()


class DemoCommand:
    """Vacancy in bcc Fe, exactly: E_f, S_f, migration saddle, ν* and rates (built-in default job).

    Relaxes a vacancy in the paper's 1024-site (8 a0)³ cell, computes its exact formation entropy
    (Eq. 20) against the perfect cell, finds the vacancy-jump saddle (CI-NEB + Newton with the
    exact Hessian), checks inertia 0/1, and prints the Vineyard attack frequency and HTST rates.
    """

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--size", type=int, default=8, metavar="N", help="cell (N a0)^3, 2N^3 sites (default 8)")
        parser.add_argument("--potential", "-p", default="Fe_mm", help="bcc potential (default Fe_mm)")
        parser.add_argument("--json", action="store_true", help="print the results as JSON")

    @staticmethod
    def run(args, comm):
        from hpcvib.cli.demo import format_table, run_demo

        if args.size < 3:
            from hpcvib.errors import InputError
            raise InputError(f"--size must be at least 3 (got {args.size})")
        res = run_demo(comm, args.size, args.potential)
        if args.json:
            emit_json(comm, res)
        elif comm.rank == 0:
            print(format_table(res), flush=True)


class DescriptorsCommand:
    """bSO(4) bispectrum descriptors of structures: per-atom D^i, sums D and DD (Eq. 16).

    Conventions of LAMMPS compute sna/atom (THEORY §5). Output by suffix of -o: .h5 (HDF5, one
    group per structure) or .npz; both hold per-atom descriptors (N×K, float64), D (K), DD (K×K)
    and the component table (j1, j2, j). Many small cells are split over the ranks (one cell per
    rank at a time); a large cell is split by atoms over all ranks, and its sums are reduced.
    """

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("structures", nargs="+", metavar="STRUCTURE")
        parser.add_argument("--jmax", type=float, default=4.0, help="jmax (default 4: 35 components)")
        parser.add_argument("--rcut", type=float, help="cut-off, Å (default: the descriptor cut-off the potential states — Fe_mm 5.0, "
                                 "Stillinger–Weber Si its own 3.77118 — or 5.0 without --potential)")
        parser.add_argument("--potential", "-p", help="take the descriptor cut-off of this potential (THEORY §5)")
        parser.add_argument("--full", action="store_true", help="LAMMPS's full component list instead of j1 = j2")
        parser.add_argument("-o", "--output", help="output file (.h5 or .npz)")
        parser.add_argument("--json", action="store_true", help="print the sums D (and N) per structure as JSON lines")
        add_keep_going_argument(parser)
        add_format_argument(parser)

    @staticmethod
    def run(args, comm):
        from hpcvib.errors import InputError
        from hpcvib.learning.descriptors import DEFAULT_DESCRIPTOR_CUTOFF, DescriptorSettings, compute_many, write_descriptors
        from hpcvib.parallel import root_only

        if args.output and not args.output.endswith((".h5", ".hdf5", ".npz")):
            raise InputError(f"{args.output}: unknown descriptor file format (use .h5 or .npz)")
        if args.output:
            from hpcvib.fileio import check_writable

            root_only(comm, check_writable, args.output)
        if args.rcut is not None:
            rcut = args.rcut
        elif args.potential:
            from hpcvib.potentials import load_potential

            rcut = collective_call(comm, load_potential, args.potential).descriptor_cutoff
        else:
            rcut = DEFAULT_DESCRIPTOR_CUTOFF
        settings = DescriptorSettings(jmax=args.jmax, rcut=rcut, full=args.full)
        settings.twojmax  # validates jmax
        failures = ItemFailures(comm, args.keep_going, args.json)
        frames = failures.good(load_structures(comm, args.structures, args.file_format, types=args.types,
                                               keep_going=args.keep_going))
        results = compute_many(comm, frames, settings, keep_per_atom=bool(args.output))
        if args.output:
            root_only(comm, write_descriptors, args.output, frames, results, settings)
        if args.json:
            for (label, atoms), res in zip(frames, results):
                emit_json(comm, {"structure": label, "n_atoms": len(atoms), "settings": settings.as_dict(),
                                 "D": res.D, "DD_trace": float(np.trace(res.DD))})
        failures.finish()


class BuildCommand:
    """Build a prismatic dislocation loop in a bcc cell, optionally relaxed (O(N) memory).

    A loop of SIZE self-interstitials (⟨b⟩ dumbbells) or vacancies on the atomic rows along the
    Burgers direction that cross a disc of the habit plane (hpcvib/geometry/loops.py), at the
    centre of an (n a0)³ cell. --relax: FIRE, then Newton steps solved by ICC-preconditioned
    conjugate gradients, to --fmax; the lowest eigenvalues of D (preconditioned Davidson) then
    tell whether the end point is a minimum. -o writes extxyz with the loop's labels.
    """

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--cell", type=int, required=True, metavar="N", help="(N a0)^3 bcc cell, 2 N^3 sites")
        parser.add_argument("--loop", type=int, required=True, metavar="SIZE", help="number of defects in the loop")
        parser.add_argument("--vacancy", action="store_true", help="a vacancy loop (default: self-interstitials)")
        parser.add_argument("--burgers", choices=["111", "100"], default="111",
                            help="Burgers direction: 111 (b = a0/2<111>, default) or 100 (b = a0<100>)")
        parser.add_argument("--habit", metavar="HKL", help="habit-plane normal, e.g. 110 or 1-10 (default: "
                            "the Burgers direction, a pure-edge loop)")
        add_potential_argument(parser)
        parser.add_argument("--a0", type=float, help="lattice parameter, Å (default: the potential's bcc a0)")
        parser.add_argument("--symbol", help="element (default: the potential's first species)")
        parser.add_argument("--relax", action="store_true", help="relax to --fmax and check the lowest modes")
        parser.add_argument("--fmax", type=float, default=1e-6, help="force tolerance of --relax, eV/Å (default 1e-6)")
        parser.add_argument("-o", "--output", required=True, help="structure file (extxyz)")
        parser.add_argument("--json", action="store_true", help="print a JSON summary")

    @staticmethod
    def run(args, comm):
        from hpcvib.errors import InputError
        from hpcvib.fileio import check_writable
        from hpcvib.geometry.defects import build_defect
        from hpcvib.geometry.loops import loop_spec
        from hpcvib.parallel import root_only
        from hpcvib.potentials import lattice_constant, load_potential

        if args.fmax <= 0:
            raise InputError(f"--fmax must be positive (got {args.fmax})")
        root_only(comm, check_writable, args.output)
        pot = collective_call(comm, load_potential, args.potential)
        spec = loop_spec("V" if args.vacancy else "I", args.loop, args.burgers, args.habit)
        a0 = args.a0 or lattice_constant(pot)
        atoms = build_defect(spec, args.cell, a0, args.symbol or pot.species[0])
        out = {"structure": args.output, "family": spec.key, "n_atoms": len(atoms), "a0_A": a0}
        if args.relax:
            from hpcvib.landscape.krylov_minimum import newton_krylov_minimum

            res = newton_krylov_minimum(comm, atoms, pot, fmax=args.fmax)
            atoms = res.atoms
            out.update(energy_eV=res.energy, max_force_eV_A=res.max_force, is_minimum=res.is_minimum,
                       lowest_eigenvalues=res.lowest, **res.counts)
            atoms.info.update(energy_eV=res.energy, max_force_eV_A=res.max_force,
                              is_minimum=bool(res.is_minimum))
        atoms.info.update(family=spec.key)
        write_extxyz(comm, args.output, atoms)
        if args.json:
            emit_json(comm, out)
        elif comm.rank == 0:
            relaxed = ""
            if args.relax:
                from hpcvib.physics.thermo import without_zero_modes

                relaxed = (f", relaxed to {out['max_force_eV_A']:.2g} eV/Å, E = {out['energy_eV']:.6f} eV, "
                           f"{'a minimum' if out['is_minimum'] else 'NOT a minimum'} (lowest eigenvalue beyond "
                           f"the translations {without_zero_modes(out['lowest_eigenvalues'])[0]:.6g} eV/(Å² amu))")
            print(f"{args.output}: {spec.key}, {len(atoms)} atoms{relaxed}", flush=True)


class ModesCommand:
    """Lowest vibrational modes of structures: eigenvalues of D and frequencies, with or without
    factorising.

    Routes: shift-invert (SLEPc Krylov–Schur on (D − σI)⁻¹ with MUMPS; completeness proved by
    inertia), preconditioned (SLEPc generalised Davidson with ICC(0), translations deflated; O(N)
    memory, for cells whose factor does not fit), auto (shift-invert when the symbolic analysis
    says its factor fits in memory). The three translations come first (eigenvalue ~0).
    """

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("structures", nargs="+", metavar="STRUCTURE")
        add_potential_argument(parser)
        parser.add_argument("-k", type=int, default=6, help="number of eigenpairs, translations included (default 6)")
        parser.add_argument("--route", choices=["auto", "shift-invert", "preconditioned"], default="auto",
                            help="how to obtain them (default auto)")
        parser.add_argument("--tol", type=float, default=1e-6, help="absolute residual, eV/(Å² amu) (default 1e-6, the paper's)")
        parser.add_argument("--json", action="store_true", help="one JSON line per structure")
        add_format_argument(parser)

    @staticmethod
    def run(args, comm):
        from hpcvib.errors import InputError
        from hpcvib.linalg.hessian import assemble_hessian
        from hpcvib.linalg.preconditioned import lowest_modes_auto
        from hpcvib.physics.thermo import frequencies_thz
        from hpcvib.potentials import load_potential

        if args.k < 1 or args.tol <= 0:
            raise InputError(f"-k must be >= 1 and --tol positive (got {args.k}, {args.tol})")
        pot = collective_call(comm, load_potential, args.potential)
        for label, atoms in load_structures(comm, args.structures, args.file_format, types=args.types):
            dh = assemble_hessian(comm, atoms, pot)
            route, modes = lowest_modes_auto(dh, args.k, args.route, tol=args.tol)
            del dh
            lam = modes.eigenvalues
            out = {"structure": label, "n_atoms": len(atoms), "route": route, "eigenvalues": lam,
                   "frequencies_THz": frequencies_thz(lam), "residuals": modes.residuals,
                   "n_negative_found": int(np.sum(lam < -args.tol)), "iterations": modes.iterations,
                   "seconds": modes.seconds}
            if args.json:
                emit_json(comm, out)
            elif comm.rank == 0:
                print(f"{label}: {len(atoms)} atoms, {route}, {modes.seconds:.1f} s", flush=True)
                for i, (value, nu) in enumerate(zip(lam, out["frequencies_THz"])):
                    print(f"  {i:3d}  λ = {value: .9e} eV/(Å² amu)   ν = {nu: .6f} THz", flush=True)


class PotentialsCommand:
    """List the built-in potentials, or describe a potential file."""

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("potential", nargs="?", help="a built-in name or a file to describe")

    @staticmethod
    def run(args, comm):
        from hpcvib.potentials import BUILTIN, load_potential

        if args.potential is None:
            if comm.rank == 0:
                for name, text in BUILTIN.items():
                    print(f"{name:12s} {text}")
            return
        # every rank loads (an unreadable file raises on every rank), rank 0 prints
        pot = collective_call(comm, load_potential, args.potential)
        if comm.rank == 0:
            print(json.dumps({**pot.parameters(), "sha256": pot.sha256, "citation": pot.citation}, indent=1))


class RunCommand:
    """Run a TOML job: generate|amorphous → relax → thermo → descriptors → saddles → fit → report.

    Stages farm their configurations over groups of ranks ([job] group_size); every result is
    written atomically to the database, so rerunning an interrupted job continues where it
    stopped and rerunning a finished one does nothing. See jobs/README.md for every key.
    """

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("job", nargs="?", metavar="JOB.toml")
        parser.add_argument("--database", "-d", help="override [job] database")
        parser.add_argument("--describe", action="store_true", help="print every job-file key and exit")
        parser.add_argument("--quarantine", action="store_true",
                            help="move unreadable record files (a failing disk) to DB.h5.d/quarantine/ and "
                                 "compute their tasks again, instead of stopping with an error")
        parser.add_argument("--batches", metavar="LIST",
                            help="build only these batches of a batched job (1-based numbers and ranges: 5-14, "
                                 "1-4,9), e.g. one slice per Slurm array task or per machine, each into its own "
                                 "database; merge their training tables with `hpcvib fit A.npz B.npz`")

    @staticmethod
    def run(args, comm):
        from hpcvib.errors import InputError
        from hpcvib.parallel import root_only
        from hpcvib.workflow.jobfile import describe_schema, load_job
        from hpcvib.workflow.pipeline import Pipeline, format_summary, parse_batches, summary_rows

        if args.describe:
            if comm.rank == 0:
                print(describe_schema())
            return
        if not args.job:
            raise InputError("give a job file (see jobs/ and hpcvib run --describe)")
        job = root_only(comm, load_job, args.job)
        from hpcvib.learning.report import results_table

        batches = parse_batches(args.batches) if args.batches is not None else None
        pipe = Pipeline(comm, job, args.database, quarantine=args.quarantine, batches=batches)
        pipe.run()
        fit_dir = job["fit"]["output"] if "fit" in job.stages else None
        text = root_only(comm, lambda: format_summary(summary_rows(pipe.db)) + "\n\n" + results_table(pipe.db, fit_dir))
        if comm.rank == 0:
            print(text, flush=True)


class ImportCommand:
    """Import your own structures (LAMMPS, ARTn, VASP, extxyz, ...) into a database and compute
    their exact ln det', S_f, E_f and descriptors — the [import], [thermo] and [descriptors]
    stages of a job, without writing the job file. Rerunning with more files adds them.

    Each frame is one configuration (key: its path, @frame for multi-frame files); extxyz
    ``info`` 'family' labels it. A bcc or fcc host's strain and perfect reference come from its cell.
    Structures are trusted as relaxed (forces checked against --force-tol) unless --relax.
    """

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("database", metavar="DB.h5")
        parser.add_argument("structures", nargs="*", metavar="STRUCTURE", help="files or globs")
        parser.add_argument("--events", nargs="+", default=[], metavar="EVENT",
                            help="events: files or globs of 2 or 3 frames (minimum, first-order saddle[, final "
                                 "minimum]; hpcvib saddle -o writes them), directories with reactant / saddle "
                                 "[/ product] files (eOn), or ARTn directories of numbered minNNNN / sadNNNN files "
                                 "(paired by their events.list, else by number): exact ΔE, ln ν* and D_m ⊕ D_s for "
                                 "the event models")
        add_potential_argument(parser)
        parser.add_argument("--relax", action="store_true", help="relax the structures first (else they are "
                            "checked: largest force ≤ --force-tol)")
        parser.add_argument("--force-tol", type=float, default=1e-3, metavar="F", help="eV/Å (default 1e-3)")
        parser.add_argument("--lattice", choices=["bcc", "fcc", "amorphous"], default="bcc",
                            help="host: bcc or fcc (S_f against the perfect cell detected from each structure's "
                                 "cell) or amorphous (no reference)")
        parser.add_argument("--no-descriptors", action="store_true", help="exact results only")
        add_format_argument(parser)

    @staticmethod
    def run(args, comm):
        from hpcvib.parallel import root_only
        from hpcvib.workflow.jobfile import validate
        from hpcvib.workflow.pipeline import Pipeline, format_summary, summary_rows

        if not args.structures and not args.events:
            from hpcvib.errors import InputError

            raise InputError("give structure files to import, or --events EVENT...")
        raw = {"job": {"database": args.database, "name": "import"},
               "system": {"potential": args.potential, "lattice": args.lattice},
               "import": {"files": list(args.structures), "events": list(args.events),
                          "format": args.file_format or "",
                          "types": [t for t in (args.types or "").split(",") if t],
                          "relaxed": not args.relax, "force_tol": args.force_tol},
               "thermo": {}}
        if args.relax:
            raw["relax"] = {"strains": [0.0]}
        if not args.no_descriptors:
            raw["descriptors"] = {}
        job = root_only(comm, validate, raw, "hpcvib import")
        pipe = Pipeline(comm, job)
        pipe.run()
        text = root_only(comm, lambda: format_summary(summary_rows(pipe.db)))
        if comm.rank == 0:
            print(text, flush=True)


class StatusCommand:
    """Counts per stage (ok / failed / duplicate), failure reasons and throughput of a database."""

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("database", metavar="DB.h5")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")

    @staticmethod
    def run(args, comm):
        from hpcvib.database import Database
        from hpcvib.parallel import root_only
        from hpcvib.workflow.pipeline import format_summary, summary_rows

        summary = root_only(comm, lambda: summary_rows(Database(args.database)))
        if args.json:
            emit_json(comm, summary)
        elif comm.rank == 0:
            print(format_summary(summary), flush=True)


class ExportCommand:
    """Export a database: relaxed structures with results (.xyz/.extxyz), a flat table (.csv), or
    the compact formation-entropy training table (.npz: key, family, strain, E_f, S_f, ΔD; no
    positions) from which `hpcvib fit TABLE.npz` refits the linear model."""

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("database", metavar="DB.h5")
        parser.add_argument("-o", "--output", required=True,
                            help="output file: .extxyz/.xyz, .csv or .npz; with --events a folder")
        parser.add_argument("--events", action="store_true",
                            help="the events instead: one extxyz per event (minimum, saddle, final minimum; "
                                 "results in the saddle's info), as `hpcvib import --events` reads them")

    @staticmethod
    def run(args, comm):
        from hpcvib.database import Database, export_csv, export_extxyz
        from hpcvib.errors import InputError
        from hpcvib.log import get_logger
        from hpcvib.parallel import root_only

        db = Database(args.database)
        if args.events:
            from hpcvib.database import export_events

            n = root_only(comm, export_events, db, args.output)
        elif args.output.endswith(".csv"):
            n = root_only(comm, export_csv, db, args.output)
        elif args.output.endswith((".xyz", ".extxyz")):
            n = root_only(comm, export_extxyz, db, args.output)
        elif args.output.endswith(".npz"):
            from hpcvib.learning.training import write_training_table

            n = root_only(comm, write_training_table, db, args.output)["rows"]
        else:
            raise InputError(f"{args.output}: unknown export format (use .extxyz, .xyz, .csv or .npz)")
        get_logger("export").info("wrote %d rows/frames to %s", n, args.output)


class SaddleCommand:
    """Search a first-order saddle from a relaxed minimum (ARTn with the exact sparse Hessian).

    Activation from a seeded random displacement of an atom and its neighbours, climb along the
    lowest eigenmode of D (SLEPc, warm-started) with relaxation in the perpendicular hyperplane,
    exact-Hessian Newton steps near the saddle, exact inertia check (must be 1), and relaxation to
    both adjacent minima (the event is kept when one side is the initial minimum). -o writes three
    frames: initial minimum, saddle, final minimum.
    """

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("structure", metavar="STRUCTURE", help="relaxed minimum")
        add_potential_argument(parser)
        parser.add_argument("--seed", type=int, default=0, help="seed of the activation (default 0)")
        parser.add_argument("--atom", type=int, help="centre of the activation (default: drawn with the seed "
                            "from the atoms the --activation rule picks)")
        parser.add_argument("--mode-solver", choices=["dense", "slepc"], default="dense",
                            help="dense (default): one shifted dense factor per step gives the lowest modes and "
                                 "the min-mode-following step (one process, <= 4000 unknowns, else slepc); "
                                 "slepc: SLEPc modes and ARTn steps")
        parser.add_argument("--activation", choices=["defect", "random"], default="defect",
                            help="defect (default): atoms whose energy differs from the host's median by more than "
                                 "max(0.02 eV, 4 robust spreads) or whose coordination differs from the most common "
                                 "one — the defect region; random: any atom")
        parser.add_argument("--fmax", type=float, default=1e-7, help="saddle force tolerance, eV/Å (default 1e-7)")
        parser.add_argument("--no-newton", action="store_true", help="plain ARTn steps only (no Newton near the saddle)")
        parser.add_argument("-o", "--output", help="event file (extxyz, 3 frames)")
        parser.add_argument("--json", action="store_true", help="print the event as JSON")
        add_format_argument(parser)

    @staticmethod
    def run(args, comm):
        from hpcvib.errors import InputError
        from hpcvib.landscape.artn import ArtnSettings, SaddleSearch

        if args.fmax <= 0:
            raise InputError(f"--fmax must be positive (got {args.fmax})")
        label, minimum = load_structures(comm, [args.structure], args.file_format, types=args.types)[0]
        if args.atom is not None and not 0 <= args.atom < len(minimum):
            raise InputError(f"{label}: --atom {args.atom} out of range (0..{len(minimum) - 1})")
        settings = ArtnSettings(fmax=args.fmax, newton=not args.no_newton, activation=args.activation,
                                mode_solver=args.mode_solver)
        res = SaddleSearch(comm, args.potential, settings).search(minimum, seed=args.seed, atom=args.atom)
        out = {"structure": label, **res.summary()}
        if res.status == "ok" and args.output:
            frames = [minimum.copy(), res.saddle.copy(), res.final.copy()]
            for f, kind, e in zip(frames, ("minimum", "saddle", "final minimum"),
                                  (res.energies["minimum"], res.energies["saddle"], res.energies["final"])):
                f.calc = None
                f.info.update(kind=kind, energy_eV=e)
            write_extxyz(comm, args.output, frames)
        if args.json:
            emit_json(comm, out)
        elif comm.rank == 0:
            if res.status == "ok":
                print(f"{label}: saddle found, ΔE = {res.delta_E_eV:.6f} eV, ln(ν*/THz) = {res.ln_nu_THz:.6f}, "
                      f"λ_neg = {res.lambda_neg:.6g} eV/(Å² amu), {res.counts['forces']} force and "
                      f"{res.counts['modes']} eigenmode evaluations, {res.seconds:.1f} s", flush=True)
            else:
                print(f"{label}: search failed: {res.reason}", flush=True)
        if res.status != "ok":
            raise SearchFailed(f"{label}: saddle search failed: {res.reason}")


class SearchFailed(Exception):
    """A saddle search that ended without an event (exit status 1, not a usage error)."""


def training_tables_or_database(paths: list) -> list:
    """The training tables (.npz) among ``paths``, [] for one database; :class:`InputError`
    for a mix, or for several databases."""
    from hpcvib.errors import InputError

    tables = [p for p in paths if p.endswith(".npz")]
    if tables and len(tables) < len(paths) or len(paths) > 1 and not tables:
        raise InputError(f"{' '.join(paths)}: give one database, or one or more training tables (.npz)")
    return tables


class FitCommand:
    """Fit surrogate models to a database: S_f (linear, EQML), ln ν* and ΔE (linear, Eq. 27/30).

    Saves <output>/<target>_<model>.json (weights, posterior, descriptor settings, potential hash)
    and <output>/fit.json (errors, learning curves, predictions for the report). Learning-curve
    splits are spread over the MPI ranks.
    """

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("database", metavar="DB.h5|TABLE.npz", nargs="+",
                            help="a database, or training tables from `hpcvib export DB -o TABLE.npz` (linear S_f "
                                 "only; several tables of the same potential and descriptors are fitted together)")
        parser.add_argument("--target", action="append", choices=["S_f", "ln_nu", "dE"],
                            help="target (repeatable; default: all the database supports)")
        parser.add_argument("--model", action="append", choices=["linear", "eqml"],
                            help="model (repeatable; default linear and eqml)")
        parser.add_argument("--splits", type=int, default=100, help="random splits per test fraction (default 100)")
        parser.add_argument("--per-strain", action="store_true",
                            help="one S_f model per strain class of the data (interpolated in strain between "
                                 "classes when predicting)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("-o", "--output", default="models", help="output directory (default models/)")
        parser.add_argument("--json", action="store_true", help="print errors and learning curves as JSON")

    @staticmethod
    def run(args, comm):
        from hpcvib.database import Database
        from hpcvib.learning.training import fit_database

        if args.splits < 1:
            from hpcvib.errors import InputError

            raise InputError(f"--splits {args.splits}: need at least one split per test fraction")
        tables = training_tables_or_database(args.database)
        if tables:
            from hpcvib.learning.training import fit_table

            res = fit_table(comm, tables, args.output, n_splits=args.splits, seed=args.seed,
                            per_strain=args.per_strain)
        else:
            res = fit_database(comm, Database(args.database[0]), tuple(args.target or ("S_f", "ln_nu", "dE")),
                               tuple(args.model or ("linear", "eqml")), args.output, n_splits=args.splits,
                               seed=args.seed, per_strain=args.per_strain)
        if args.json:
            emit_json(comm, {k: {kk: v[kk] for kk in ("n_samples", "n_features", "fit_rmse", "fit_mae",
                                                      "learning_curve", "model_file")} for k, v in res.items()})


class PredictCommand:
    """Predict S_f of structures (or ln ν*, ΔE of a MINIMUM SADDLE pair) with a saved model, in O(N).

    ΔD, ΔDD are taken against the perfect bcc cell of the same shape (built automatically) or
    --reference. The predictive standard deviation comes from the Bayesian posterior. With -o,
    the linear S_f model's per-atom contributions w·(D^i − D_b/N_b) are written as the extxyz
    column S_f_atom (they sum to the prediction) for OVITO.
    """

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("model", metavar="MODEL", help="a model file from `hpcvib fit`, or a built-in model: "
                            "Fe_mm-Sf-linear (one linear model per strain class, trained on the paper's Fe database, see "
                            "hpcvib/data/models/README.md)")
        parser.add_argument("structures", nargs="+", metavar="STRUCTURE")
        parser.add_argument("--reference", help="perfect reference cell (default: built for bcc cells)")
        parser.add_argument("--potential", "-p", help="check the model was trained with this potential")
        parser.add_argument("-o", "--output", help="extxyz with per-atom contributions (linear S_f model)")
        parser.add_argument("--jmax", type=float, help="descriptor jmax (must match the model's)")
        parser.add_argument("--rcut", type=float, help="descriptor cut-off, Å (must match the model's)")
        parser.add_argument("--full", action="store_true", default=None, help="full component set (must match)")
        parser.add_argument("--json", action="store_true", help="one JSON line per prediction")
        add_keep_going_argument(parser)
        add_format_argument(parser)

    @staticmethod
    def run(args, comm):
        from hpcvib.learning.prediction import predict_structures

        failures = ItemFailures(comm, args.keep_going, args.json)
        if args.output:
            from hpcvib.fileio import check_writable
            from hpcvib.parallel import root_only

            root_only(comm, check_writable, args.output)

        def show(row):
            if args.json:
                emit_json(comm, row)
            elif comm.rank == 0:
                print(f"{row['structure']}: {row['target']} = {row['prediction']:.6g} ± {row['std']:.3g} "
                      f"({row['seconds']:.2f} s)", flush=True)

        predict_structures(comm, args, failures, show)
        failures.finish()


class ReportCommand:
    """Markdown report with figures (parity, learning curves, residuals, compensation law)."""

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("database", metavar="DB.h5|TABLE.npz", nargs="+",
                            help="the database, or the training tables that `hpcvib fit TABLE.npz...` fitted "
                                 "(statistics from the merged tables)")
        parser.add_argument("--models", default="models", help="directory of the fit (default models/)")
        parser.add_argument("-o", "--output", default="report", help="output directory (default report/)")

    @staticmethod
    def run(args, comm):
        from hpcvib.database import Database
        from hpcvib.learning.report import write_report
        from hpcvib.log import get_logger
        from hpcvib.parallel import root_only

        tables = training_tables_or_database(args.database)
        if tables:
            path = root_only(comm, write_report, None, None, args.models, args.output, tables)
            get_logger("report").info("wrote %s", path)
            return
        db = Database(args.database[0])
        root_only(comm, db.provenance)  # a missing or unreadable database is named before anything else
        path = root_only(comm, write_report, db, None, args.models, args.output)
        get_logger("report").info("wrote %s", path)


COMMANDS = [
    ("run", RunCommand),
    ("import", ImportCommand),
    ("status", StatusCommand),
    ("export", ExportCommand),
    ("thermo", ThermoCommand),
    ("prefactor", PrefactorCommand),
    ("saddle", SaddleCommand),
    ("hessian", HessianCommand),
    ("modes", ModesCommand),
    ("build", BuildCommand),
    ("descriptors", DescriptorsCommand),
    ("fit", FitCommand),
    ("predict", PredictCommand),
    ("report", ReportCommand),
    ("demo", DemoCommand),
    ("potentials", PotentialsCommand),
]


def build_parser(commands=None):
    parser = argparse.ArgumentParser(
        prog="hpcvib",
        description="Exact harmonic vibrational properties of defects and activated events at scale.")
    parser.add_argument("--version", action="version", version=f"hpcvib {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (rank 0)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("-T", "--traceback", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--petsc-options", metavar="STR", default=None,
                        help='PETSc/SLEPc options, e.g. "-mat_mumps_icntl_7 7 -log_view"')
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, cls in commands or COMMANDS:
        doc = (cls.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0] if doc else "", description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        cls.add_arguments(p)
        p.set_defaults(command_class=cls)
    return parser


def environment_message(exc: OSError) -> str:
    """One line for an operating-system error: the file and what is wrong with it."""
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what


#: environment variables in which MPI launchers (Open MPI, MPICH/Hydra, PMIx, Slurm) give the rank
LAUNCHER_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")


def launcher_rank() -> int:
    """This process's rank as the launcher set it, read before MPI is initialised (0 when
    started without a launcher)."""
    for name in LAUNCHER_RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _parse_on_launcher_rank_zero(parser, argv):
    """parse_args with --help, usage and argument errors printed by rank 0 only (every rank
    still parses, and exits with the same code on a bad command line)."""
    if launcher_rank() == 0:
        return parser.parse_args(argv)
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        return parser.parse_args(argv)


def main(argv=None) -> int:
    parser = build_parser()
    args = _parse_on_launcher_rank_zero(parser, argv)
    if getattr(args, "command_class", None) is None:
        parser.print_help()
        return 0
    from mpi4py import MPI

    from hpcvib.errors import HpcvibError
    from hpcvib.linalg.petsc_env import finalize_collectively
    from hpcvib.log import setup_logging
    from hpcvib.parallel import limit_numba_threads
    from hpcvib.workflow.farm import release_all_petsc_garbage

    comm = MPI.COMM_WORLD  # the CLI edge: everything below takes comm explicitly
    log = setup_logging(comm, -1 if args.quiet else (1 if args.verbose else 0))
    log.debug("numba threads per rank: %d", limit_numba_threads(comm))
    start = time.perf_counter()
    try:
        if getattr(args, "memory_limit", None) is not None:
            from hpcvib.linalg.spectral import MEMORY_LIMIT_VARIABLE

            if not args.memory_limit > 0:
                from hpcvib.errors import InputError

                raise InputError(f"--memory-limit must be a positive number of MB (got {args.memory_limit})")
            os.environ[MEMORY_LIMIT_VARIABLE] = str(args.memory_limit)
        if args.petsc_options:
            from hpcvib.linalg.petsc_env import petsc_options

            petsc_options(args.petsc_options)
        args.command_class.run(args, comm)
        release_all_petsc_garbage(comm)
        finalize_collectively(comm)
    except HpcvibError as exc:
        if args.traceback:
            raise
        if comm.rank == 0:
            print(f"hpcvib: error: {exc}", file=sys.stderr, flush=True)
        finalize_collectively(comm)  # user errors are raised on every rank
        return getattr(exc, "exit_status", 2)
    except SearchFailed as exc:
        if comm.rank == 0:
            print(f"hpcvib: {exc}", file=sys.stderr, flush=True)
        finalize_collectively(comm)
        return 1
    except OSError as exc:  # the environment: unwritable or missing path, full disk, corrupt file
        if args.traceback:
            raise
        from hpcvib.parallel import raised_on_every_rank

        if raised_on_every_rank(exc) or comm.size == 1:
            if comm.rank == 0:
                print(f"hpcvib: error: {environment_message(exc)}", file=sys.stderr, flush=True)
            finalize_collectively(comm)
            return 2
        print(f"hpcvib: error (rank {comm.rank}): {environment_message(exc)}", file=sys.stderr, flush=True)
        comm.Abort(2)
    except KeyboardInterrupt:
        return 130
    except BaseException:
        if comm.size > 1:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            comm.Abort(1)
        raise
    log.info("done in %.2f s", time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
