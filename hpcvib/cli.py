"""Command-line interface: ``hpcvib <command> ...`` (also under ``mpiexec -n P hpcvib ...``).

Each command is a class with ``add_arguments(parser)`` and ``run(args, comm)``; the first line of
its docstring is the short help (ASE ``cli/main.py`` style). Heavy imports happen inside ``run``
so ``--help`` stays fast. User errors print one line ``hpcvib: error: ...`` and exit with status
2; an unexpected exception on any rank aborts the whole MPI job instead of leaving ranks waiting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import __version__


# ------------------------------------------------------------------------------------------
# helpers shared by the commands
# ------------------------------------------------------------------------------------------
def add_potential_argument(parser):
    parser.add_argument("--potential", "-p", required=True, metavar="P",
                        help="built-in name (Fe_mm, Si_sw, Si_sw_vink) or potential file "
                             "(*.eam.fs, *.eam.alloy, *.sw)")


def add_format_argument(parser):
    parser.add_argument("--format", dest="file_format", metavar="FMT", default=None,
                        help="ASE format of the structure files when the suffix does not tell "
                             "(e.g. lammps-data, vasp)")


def load_structures(comm, paths, file_format=None, require_periodic=True):
    """Read (rank 0) and broadcast every frame of every path/glob; validate each.

    Returns a list of (label, atoms)."""
    from .parallel import root_only
    from .structures import read_structures, validate
    import glob

    def read_all():
        out = []
        for spec in paths:
            matches = sorted(glob.glob(spec)) if any(ch in spec for ch in "*?[") else [spec]
            if not matches:
                from .errors import InputError
                raise InputError(f"{spec}: no file matches")
            for path in matches:
                frames = read_structures(path, format=file_format)
                for k, atoms in enumerate(frames):
                    label = path if len(frames) == 1 else f"{path}@{k}"
                    validate(atoms, label, require_periodic=require_periodic)
                    out.append((label, atoms))
        return out

    return root_only(comm, read_all)


def emit_json(comm, obj, stream=None):
    """Print one JSON object (one line) on rank 0."""
    if comm.rank == 0:
        print(json.dumps(obj, default=_json_default), file=stream or sys.stdout, flush=True)


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
        from .errors import InputError
        from .hessian import assemble_hessian
        from .log import get_logger, timed
        from .matrixio import matrix_format, write_matrix
        from .parallel import root_only
        from .potentials import load_potential

        log = get_logger()
        matrix_format(args.output)  # fail early on a bad suffix
        timings = {}
        with timed("read", timings):
            frames = load_structures(comm, [args.structure], args.file_format)
        if not -len(frames) <= args.frame < len(frames):
            raise InputError(f"{args.structure}: frame {args.frame} requested, file has {len(frames)}")
        label, atoms = frames[args.frame]
        pot = load_potential(args.potential)
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


class PotentialsCommand:
    """List the built-in potentials, or describe a potential file."""

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("potential", nargs="?", help="a built-in name or a file to describe")

    @staticmethod
    def run(args, comm):
        from .potentials import BUILTIN, load_potential

        if comm.rank != 0:
            return
        if args.potential is None:
            for name, text in BUILTIN.items():
                print(f"{name:12s} {text}")
            return
        pot = load_potential(args.potential)
        print(json.dumps({**pot.parameters(), "sha256": pot.sha256, "citation": pot.citation}, indent=1))


COMMANDS = [
    ("hessian", HessianCommand),
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


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command_class", None) is None:
        parser.print_help()
        return 0
    from mpi4py import MPI

    from .errors import HpcvibError
    from .log import setup_logging

    comm = MPI.COMM_WORLD  # the CLI edge: everything below takes comm explicitly
    log = setup_logging(comm, -1 if args.quiet else (1 if args.verbose else 0))
    start = time.perf_counter()
    try:
        if args.petsc_options:
            from .petsc_env import petsc_options

            petsc_options(args.petsc_options)
        args.command_class.run(args, comm)
    except HpcvibError as exc:
        if args.traceback:
            raise
        if comm.rank == 0:
            print(f"hpcvib: error: {exc}", file=sys.stderr, flush=True)
        return 2
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
