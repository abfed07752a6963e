"""Atomic structures: reading (anything ASE reads), validation, and builders.

A structure is an :class:`ase.Atoms`; hpcvib only requires a periodic cell (orthogonal or
triclinic), finite positions, and masses (taken from ASE unless the file or the caller sets them).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from hpcvib.errors import InputError

#: Closest approach accepted between two atoms, Å.
MIN_DISTANCE = 0.5


#: ASE formats whose atoms carry LAMMPS type numbers that ``types`` maps to elements
LAMMPS_FORMATS = ("lammps-data", "lammps-dump-text")


def parse_types(text: str | Sequence[str] | None) -> list[str] | None:
    """``"Fe,Cr"`` or ``["Fe", "Cr"]`` → ``["Fe", "Cr"]`` (LAMMPS type i+1 is element i);
    unknown element symbols are an :class:`InputError`."""
    from ase.data import atomic_numbers

    if text is None or text == []:
        return None
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    bad = [t for t in names if t not in atomic_numbers]
    if bad or not names:
        raise InputError(f"--types {text!r}: {bad[0] if bad else 'empty'} is not an element symbol "
                         "(give one symbol per LAMMPS type, e.g. --types Fe,Cr)")
    return names


def _type_mapping_options(fmt: str | None, path: str, types: list[str] | None) -> dict:
    """ASE reader options that name LAMMPS type i+1 as ``types[i]`` (masses then from the
    element, unless the file has a Masses section)."""
    if types is None:
        return {}
    from ase.data import atomic_numbers

    if fmt == "lammps-data":
        return {"Z_of_type": {i + 1: atomic_numbers[t] for i, t in enumerate(types)}}
    if fmt == "lammps-dump-text":
        return {"specorder": list(types)}
    raise InputError(f"{path}: --types applies to LAMMPS data and dump files (this one is read as "
                     f"{fmt or 'a format with element names'}; use --format)")


def read_structures(path: str | os.PathLike, index: str | int = ":", format: str | None = None,
                    types: Sequence[str] | None = None):
    """Read every frame of ``path`` with ASE; any failure becomes an :class:`InputError`.

    Parameters
    ----------
    path : a file ASE can read (extxyz, LAMMPS data/dump, POSCAR, CIF, ...).
    index : ASE frame selection; ``":"`` reads all frames.
    format : ASE format name when it cannot be guessed from the suffix (e.g. ``lammps-data``).
    types : element of each LAMMPS atom type, in type order (``["Fe"]``: type 1 is Fe), for
        LAMMPS data files without a Masses section and dumps with a ``type`` column only.

    Returns
    -------
    list of ase.Atoms
    """
    import ase.io

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a structure file")
    fmt = format or _guess_format(path)
    options = _type_mapping_options(fmt, path, parse_types(types))
    try:
        frames = ase.io.read(path, index=index, format=fmt, parallel=False, **options)
    except Exception as exc:  # ASE raises many types for unreadable files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "" if format else "; if the suffix misleads, give the format: --format (an ASE format name, e.g. " \
                                 "extxyz, lammps-data, lammps-dump-text, vasp)"
        raise InputError(f"{path}: cannot read structure ({detail}){hint}") from exc
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise InputError(f"{path}: no structure found in file")
    for atoms in frames:
        atoms.info.setdefault("source", path)
        if types is not None and "masses" not in atoms.arrays:
            atoms.set_masses(None)  # from the elements
        if types is not None:
            _check_types_cover(atoms, path, len(parse_types(types)))
    return frames


def _check_types_cover(atoms, path: str, n_types: int) -> None:
    """Every atom got an element (a type beyond the list stays a bare number)."""
    if "type" in atoms.arrays and atoms.arrays["type"].max() > n_types:
        raise InputError(f"{path}: LAMMPS type {int(atoms.arrays['type'].max())} has no element in --types "
                         f"({n_types} given)")


def _guess_format(path: str) -> str | None:
    """Formats ASE does not guess from names that LAMMPS users commonly use."""
    name = os.path.basename(path).lower()
    if name.endswith((".data", ".lmp", ".lammps")) or name.startswith("data."):
        return "lammps-data"
    if name.endswith((".dump", ".lammpstrj")) or name.startswith("dump."):
        return "lammps-dump-text"
    return None


def validate(atoms, source: str = "<structure>", require_periodic: bool = True,
             min_distance: float = MIN_DISTANCE) -> None:
    """Check that ``atoms`` is a structure hpcvib can work on; raise :class:`InputError` if not.

    Checks: at least one atom, finite positions and cell, periodic in all three directions with a
    non-singular cell (when ``require_periodic``), positive masses, no two atoms closer than
    ``min_distance`` Å (periodic images included).
    """
    from hpcvib.geometry.neighbours import closest_pair

    n = len(atoms)
    if n == 0:
        raise InputError(f"{source}: structure has no atoms")
    pos = atoms.get_positions()
    if not np.all(np.isfinite(pos)):
        bad = int(np.argwhere(~np.isfinite(pos))[0, 0])
        raise InputError(f"{source}: non-finite coordinates (NaN or inf), first at atom {bad}")
    cell = np.asarray(atoms.get_cell())
    if not np.all(np.isfinite(cell)):
        raise InputError(f"{source}: non-finite cell vectors")
    if require_periodic:
        if not np.all(atoms.pbc):
            raise InputError(f"{source}: cell must be periodic in x, y and z (pbc={list(map(bool, atoms.pbc))})")
        volume = abs(np.linalg.det(cell))
        if volume < 1e-6:
            raise InputError(f"{source}: periodic cell is singular (volume {volume:.3g} Å^3)")
    masses = atoms.get_masses()
    if np.any(~np.isfinite(masses)) or np.any(masses <= 0):
        raise InputError(f"{source}: every atom needs a positive mass")
    if n > 1 or require_periodic:
        d, i, j = closest_pair(atoms, min_distance)
        if d < min_distance:
            raise InputError(f"{source}: atoms {i} and {j} are {d:.3f} Å apart (< {min_distance} Å)")


#: atoms per conventional cubic cell of the cubic Bravais hosts hpcvib knows
CUBIC_BASIS = {"bcc": 2, "fcc": 4}
#: a defect cell's host is the lattice whose sites its atoms sit on: median distance of the atoms
#: from their nearest site below this fraction of the lattice parameter (perfect crystal: 0; a
#: relaxed defect moves a few atoms, not the median; the wrong lattice leaves it ≥ 0.2 a)
SITE_TOLERANCE = 0.05


def _bcc_offsets(x: np.ndarray) -> np.ndarray:
    """Offsets (units a0/2) of points ``x`` from their nearest bcc site (all-even or all-odd)."""
    even = 2.0 * np.rint(x / 2.0)
    odd = 2.0 * np.floor(x / 2.0) + 1.0
    use_even = np.linalg.norm(x - even, axis=1) <= np.linalg.norm(x - odd, axis=1)
    return x - np.where(use_even[:, None], even, odd)


def _fcc_offsets(x: np.ndarray) -> np.ndarray:
    """Offsets (units a0/2) of points ``x`` from their nearest fcc site (integers of even sum):
    round every coordinate; where the sum is odd, round the worst-rounded one the other way
    (the nearest point of the D3 lattice, Conway & Sloane)."""
    near = np.rint(x)
    odd = near.sum(axis=1) % 2 != 0
    err = x - near
    worst = np.argmax(np.abs(err), axis=1)
    rows = np.flatnonzero(odd)
    cols = worst[rows]
    near[rows, cols] += np.where(err[rows, cols] >= 0.0, 1.0, -1.0)
    return x - near


#: nearest-site offsets of each cubic host lattice, in units of a/2
LATTICE_OFFSETS = {"bcc": _bcc_offsets, "fcc": _fcc_offsets}


def site_distances(positions: np.ndarray, a: float, lattice: str) -> np.ndarray:
    """Distance (Å) of every position from its nearest site of the perfect bcc or fcc lattice of
    parameter ``a`` (a site at the origin), after removing a rigid translation (the median offset)."""
    offsets = LATTICE_OFFSETS[lattice]
    x = positions / (a / 2.0)
    x = x - np.median(offsets(x), axis=0)
    return np.linalg.norm(offsets(x), axis=1) * a / 2.0


def cubic_supercell(lattice: str, n: int | Sequence[int], a0: float, symbol: str = "Fe", strain: float = 0.0):
    """Perfect bcc or fcc supercell of n conventional cubic cells of side a0 (1 + strain), Å, with
    cubic axes along x, y, z (2 or 4 atoms per cubic cell)."""
    from ase.build import bulk

    if lattice not in CUBIC_BASIS:
        raise InputError(f"lattice {lattice!r}: hpcvib builds bcc or fcc hosts")
    reps = (n, n, n) if np.isscalar(n) else tuple(int(v) for v in n)
    atoms = bulk(symbol, lattice, a=a0 * (1.0 + strain), cubic=True).repeat(reps)
    atoms.info["builder"] = f"{lattice} {reps} a0={a0:.6f} strain={strain:g}"
    return atoms


def bcc_supercell(n: int | Sequence[int], a0: float, symbol: str = "Fe", strain: float = 0.0):
    """Perfect bcc supercell of (n a0)³ (2 n³ atoms) with cubic axes along x, y, z.

    Parameters
    ----------
    n : repetitions of the conventional cubic cell (an int or three ints).
    a0 : lattice parameter, Å (e.g. :func:`hpcvib.potentials.lattice_constant`).
    strain : homogeneous isotropic strain ε; lengths are scaled by (1 + ε).
    """
    return cubic_supercell("bcc", n, a0, symbol, strain)


def cubic_reference_parameters(atoms, source: str = "<structure>"):
    """(lattice, repetitions (n_x, n_y, n_z), cubic lattice constant a in Å) of the perfect bcc or
    fcc cell with the same orthogonal cell as the defect cell ``atoms``. For each lattice, a from
    the volume per site (2 or 4 sites per cubic cell) and n_a = L_a / a; the host is the lattice
    whose three a_a agree, whose site count is within 10 % of N and on whose sites the atoms sit
    (median distance from the nearest site < 0.05 a: O(N), no neighbour list). Anything else —
    a sheared cell, diamond, a liquid — is refused with a request for a reference file."""
    cell = np.asarray(atoms.get_cell())
    if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-8:
        raise InputError(f"{source}: automatic crystal reference needs an orthogonal cell; give --reference")
    lengths = np.diag(cell)
    for lattice, basis in CUBIC_BASIS.items():
        reps = np.maximum(np.rint(lengths / (basis * np.prod(lengths) / len(atoms)) ** (1.0 / 3.0)), 1).astype(int)
        a_axes = lengths / reps
        n_sites = basis * int(np.prod(reps))
        if np.ptp(a_axes) > 1e-6 * a_axes.mean() or abs(n_sites - len(atoms)) > 0.1 * n_sites:
            continue
        if np.median(site_distances(atoms.get_positions(), a_axes[0], lattice)) < SITE_TOLERANCE * a_axes[0]:
            return lattice, tuple(int(r) for r in reps), float(a_axes[0])
    raise InputError(f"{source}: host is neither bcc nor fcc (no supercell of one lattice parameter whose sites "
                     "the atoms occupy); give the perfect reference cell (--reference)")


def diamond_supercell(n: int | Sequence[int], a0: float, symbol: str = "Si"):
    """Perfect diamond-cubic supercell (8 n³ atoms), cubic axes along x, y, z."""
    from ase.build import bulk

    reps = (n, n, n) if np.isscalar(n) else tuple(int(v) for v in n)
    return bulk(symbol, "diamond", a=a0, cubic=True).repeat(reps)


def apply_isotropic_strain(atoms, strain: float):
    """Copy of ``atoms`` with cell and positions scaled homogeneously by (1 + strain)."""
    out = atoms.copy()
    out.set_cell(np.asarray(atoms.get_cell()) * (1.0 + strain), scale_atoms=True)
    return out


def minimum_image(vectors: np.ndarray, cell) -> np.ndarray:
    """Minimum-image copies (Å) of difference vectors (…, 3) in a periodic ``cell`` (any shape)."""
    cell = np.asarray(cell)
    frac = np.linalg.solve(cell.T, np.reshape(vectors, (-1, 3)).T).T
    frac -= np.rint(frac)
    return (frac @ cell).reshape(np.shape(vectors))


def load_structures(comm, paths, file_format=None, require_periodic=True, types=None, keep_going=False):
    """Read (rank 0) and broadcast every frame of every path/glob; validate each. ``types``:
    elements of the LAMMPS atom types (:func:`hpcvib.geometry.structures.read_structures`).

    Returns a list of (label, atoms). With ``keep_going`` an unreadable file or an invalid frame
    does not end the reading: its entry is (label, the :class:`~hpcvib.errors.HpcvibError`), for
    :meth:`hpcvib.batches.ItemFailures.good` to report, and the good frames of the same file stay."""
    import glob

    from hpcvib.errors import HpcvibError
    from hpcvib.parallel import root_only

    def read_all():
        out = []
        for spec in paths:
            matches = sorted(glob.glob(spec)) if any(ch in spec for ch in "*?[") else [spec]
            if not matches:
                if not keep_going:
                    raise InputError(f"{spec}: no file matches")
                out.append((spec, InputError(f"{spec}: no file matches")))
            for path in matches:
                try:
                    frames = read_structures(path, format=file_format, types=types)
                except HpcvibError as exc:
                    if not keep_going:
                        raise
                    out.append((path, exc))
                    continue
                for k, atoms in enumerate(frames):
                    label = path if len(frames) == 1 else f"{path}@{k}"
                    try:
                        validate(atoms, label, require_periodic=require_periodic)
                    except HpcvibError as exc:
                        if not keep_going:
                            raise
                        atoms = exc
                    out.append((label, atoms))
        return out

    return root_only(comm, read_all)
