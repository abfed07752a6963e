"""Built-in potentials and the loader that turns a name or a file into a :class:`Potential`.

Built-in names:

``Fe_mm``
    EAM (eam/fs) for α-Fe, Mendelev, Han, Srolovitz, Ackland, Sun and Asta, Phil. Mag. 83, 3977
    (2003); file ``Fe_mm.eam.fs`` as distributed with LAMMPS (cut-off 5.3 Å).
``Si_sw``
    Stillinger–Weber silicon, Phys. Rev. B 31, 5262 (1985).
``Si_sw_vink``
    Stillinger–Weber modified for amorphous Si by Vink, Barkema, van der Weg and Mousseau,
    J. Non-Cryst. Solids 282, 248 (2001): λ = 31.5, ε = 1.64833 eV.

Any path is accepted too: ``*.eam.fs``/``*.fs`` (eam/fs), ``*.eam.alloy``/``*.alloy``/``*.setfl``
(eam/alloy), ``*.sw`` (Stillinger–Weber); and any ASE calculator as ``python:MODULE:FACTORY`` or
``python:FILE.py:FACTORY`` (:mod:`hpcvib.potentials.ase_calculator`).
"""

from __future__ import annotations

import functools
import os
from importlib import resources

import numpy as np

from hpcvib.errors import InputError
from hpcvib.potentials.ase_calculator import CalculatorPotential
from hpcvib.potentials.ase_calculator import PREFIX as PYTHON_PREFIX
from hpcvib.potentials.base import BlockRows, Evaluation, Potential
from hpcvib.potentials.eam import EAM
from hpcvib.potentials.sw import SI_ORIGINAL, SI_VINK, StillingerWeber

def _fe_mm() -> Potential:
    pot = EAM(data_file("Fe_mm.eam.fs"), style="fs", name="Fe_mm", citation=BUILTIN["Fe_mm"])
    pot.descriptor_cutoff = 5.0  # the paper's bSO(4) cut-off for bcc Fe (Sec. III A)
    return pot


def _silicon(parameters, name: str):
    def factory() -> Potential:
        return StillingerWeber.silicon(parameters, name, BUILTIN[name])  # descriptors: its own a·σ cut-off
    return factory


#: built-in potentials: name → (one-line description, factory); add one with :func:`register_builtin`
BUILTIN_FACTORIES = {
    "Fe_mm": ("EAM α-Fe, Mendelev et al., Phil. Mag. 83, 3977 (2003) (LAMMPS Fe_mm.eam.fs)", _fe_mm),
    "Si_sw": ("Stillinger–Weber Si, Phys. Rev. B 31, 5262 (1985)", _silicon(SI_ORIGINAL, "Si_sw")),
    "Si_sw_vink": ("Stillinger–Weber a-Si (Vink et al., J. Non-Cryst. Solids 282, 248 (2001))",
                   _silicon(SI_VINK, "Si_sw_vink")),
}
#: potential files by name ending → loader(path); add one with :func:`register_file_format`
FILE_LOADERS = {
    (".eam.fs", ".fs"): lambda path: EAM(path, style="fs"),
    (".eam.alloy", ".alloy", ".setfl"): lambda path: EAM(path, style="alloy"),
    (".sw",): StillingerWeber.from_file,
}
#: name → description of the built-ins (what ``hpcvib potentials`` lists)
BUILTIN = {name: text for name, (text, _) in BUILTIN_FACTORIES.items()}

__all__ = ["BUILTIN", "BlockRows", "EAM", "Evaluation", "Potential", "StillingerWeber",
           "load_potential", "lattice_constant", "data_file", "register_builtin", "register_file_format"]


def register_builtin(name: str, description: str, factory) -> None:
    """Make ``factory()`` (returning a :class:`Potential`) loadable by ``name`` everywhere a
    potential is named (CLI ``-p``, job files)."""
    BUILTIN_FACTORIES[name] = (description, factory)
    BUILTIN[name] = description
    _load_cached.cache_clear()


def register_file_format(endings: tuple, loader) -> None:
    """Load files whose (lower-case) name ends with one of ``endings`` by ``loader(path)``."""
    FILE_LOADERS[tuple(endings)] = loader
    _load_cached.cache_clear()


def data_file(name: str) -> str:
    """Path of a file shipped in ``hpcvib/data/potentials``."""
    return str(resources.files("hpcvib.data").joinpath("potentials", name))


def _file_kinds() -> str:
    return ", ".join("*" + e for endings in FILE_LOADERS for e in endings)


@functools.lru_cache(maxsize=16)
def _load_cached(spec: str, mtime: float) -> Potential:
    if spec.startswith(PYTHON_PREFIX):
        return CalculatorPotential(spec)
    if spec in BUILTIN_FACTORIES:
        return BUILTIN_FACTORIES[spec][1]()
    lower = spec.lower()
    for endings, loader in FILE_LOADERS.items():
        if lower.endswith(endings):
            return loader(spec)
    if lower.endswith(".eam"):
        raise InputError(f"{spec}: single-element funcfl (.eam) files are not supported; convert to setfl (eam/alloy)")
    raise InputError(f"{spec}: unknown potential (built-ins: {', '.join(BUILTIN)}; files: {_file_kinds()})")


def load_potential(spec: str | Potential) -> Potential:
    """A :class:`Potential` from a built-in name, a file path, or a Potential (returned as is)."""
    if isinstance(spec, Potential):
        return spec
    spec = os.fspath(spec)
    if spec.startswith(PYTHON_PREFIX):
        where = spec[len(PYTHON_PREFIX):].rsplit(":", 1)[0]
        return _load_cached(spec, os.path.getmtime(where) if os.path.exists(where) else 0.0)
    if spec not in BUILTIN and not os.path.exists(spec):
        if os.path.splitext(spec)[1] or os.sep in spec:
            raise InputError(f"{spec}: potential file not found")
        raise InputError(f"{spec}: unknown potential (built-ins: {', '.join(BUILTIN)})")
    mtime = os.path.getmtime(spec) if os.path.exists(spec) else 0.0
    return _load_cached(spec, mtime)


def lattice_constant(potential: Potential, structure: str = "bcc", symbol: str | None = None) -> float:
    """Equilibrium cubic lattice constant (Å) of ``structure`` (bcc, fcc, diamond) for the
    potential, by minimising the energy per atom of the conventional cell (Brent, 1e-10 Å)."""
    from ase.build import bulk
    from scipy.optimize import minimize_scalar

    symbol = symbol or potential.species[0]
    guess = {"bcc": 2.9, "fcc": 3.6, "diamond": 5.43}[structure]

    def energy(a):
        return potential.evaluate(bulk(symbol, structure, a=a, cubic=True)).energy

    grid = guess * np.linspace(0.8, 1.25, 46)
    e = [energy(a) for a in grid]
    k = int(np.argmin(e))
    res = minimize_scalar(energy, bracket=(grid[max(k - 1, 0)], grid[k], grid[min(k + 1, len(grid) - 1)]),
                          tol=1e-12)
    return float(res.x)
