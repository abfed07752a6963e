"""Any ASE calculator as an hpcvib potential: ``-p python:MODULE:FACTORY`` or
``-p python:path/to/file.py:FACTORY`` (a machine-learned potential, a MEAM through LAMMPS, EMT, …).

``FACTORY()`` returns an ASE calculator. The module states what hpcvib cannot ask a calculator:

``CUTOFF`` (Å, required)
    interaction cut-off r_c: a force depends on atoms within r_c, a Hessian block H_ij is zero
    beyond R = 2 r_c (many-body terms through a shared centre). An underestimate drops real
    couplings: state the model's true range.
``SPECIES`` (optional)
    the chemical symbols the model knows (default: any).
``DESCRIPTOR_CUTOFF`` (Å, optional)
    the bSO(4) cut-off the surrogate models use with this potential (default: ``CUTOFF``).

Energies and forces come from the calculator. The Hessian comes from central differences of
the forces with graph colouring (:mod:`hpcvib.potentials.fdhessian`): atoms farther apart than 2R are
displaced together, so one Hessian costs **6 × (number of colours) force calls** — independent
of N for large cells (1024-atom Fe with R = 10.6 Å: ~100 colours) — with the step
``FD_STEP`` = 1e-4 Å (error O(h²) ≈ 1e-8 of the Hessian for smooth potentials; potentials with
C¹ tables such as LAMMPS EAM splines err more, see the README). Every rank computes the whole
Hessian (the force calls are the calculator's, serial); the result is cached per configuration.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys

import numpy as np

from hpcvib.errors import InputError
from hpcvib.potentials.base import BlockRows, Evaluation, Potential

PREFIX = "python:"
#: central-difference step of the Hessian, Å
FD_STEP = 1e-4


def _load_module(spec: str):
    """The module of ``python:MODULE:FACTORY`` or ``python:FILE.py:FACTORY``, and FACTORY's name."""
    body = spec[len(PREFIX):]
    if ":" not in body:
        raise InputError(f"{spec}: expected python:MODULE:FACTORY or python:FILE.py:FACTORY")
    where, factory = body.rsplit(":", 1)
    if where.endswith(".py"):
        if not os.path.exists(where):
            raise InputError(f"{spec}: {where} does not exist")
        name = "hpcvib_user_potential_" + hashlib.sha256(os.path.abspath(where).encode()).hexdigest()[:12]
        module_spec = importlib.util.spec_from_file_location(name, where)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # the user's module: report its error on one line
            raise InputError(f"{spec}: importing {where} failed ({type(exc).__name__}: {exc})") from exc
        source = where
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise InputError(f"{spec}: cannot import {where} ({type(exc).__name__}: {exc})") from exc
        source = getattr(module, "__file__", "") or ""
    if not callable(getattr(module, factory, None)):
        raise InputError(f"{spec}: {where} has no callable {factory!r}")
    return module, factory, source


class CalculatorPotential(Potential):
    """An ASE calculator behind the :class:`Potential` interface (see the module docstring)."""

    def __init__(self, spec: str):
        module, factory, source = _load_module(spec)
        cutoff = getattr(module, "CUTOFF", None)
        if not isinstance(cutoff, (int, float)) or cutoff <= 0:
            raise InputError(f"{spec}: the module must define CUTOFF = <interaction cut-off in Å> (> 0)")
        try:
            self.calculator = getattr(module, factory)()
        except Exception as exc:
            raise InputError(f"{spec}: {factory}() failed ({type(exc).__name__}: {exc})") from exc
        species = list(getattr(module, "SPECIES", []))
        super().__init__(name=spec, species=species, cutoff=float(cutoff), source=source,
                         citation=(module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else "")
        self.descriptor_cutoff = float(getattr(module, "DESCRIPTOR_CUTOFF", cutoff))
        self.spec = spec
        self._hessian_cache: tuple | None = None

    @property
    def sha256(self) -> str:
        """Hash of the module file and the factory name (a changed model is a changed file)."""
        digest = hashlib.sha256(self.spec.encode())
        if self.source and os.path.isfile(self.source):
            with open(self.source, "rb") as fh:
                digest.update(fh.read())
        return digest.hexdigest()

    def parameters(self) -> dict:
        return {"name": self.name, "style": "ase-calculator", "calculator": type(self.calculator).__name__,
                "cutoff": self.cutoff, "species": self.species, "module": self.source, "fd_step": FD_STEP}

    def species_index(self, atoms, source: str = "<structure>") -> np.ndarray:
        symbols = atoms.get_chemical_symbols()
        if self.species:
            missing = sorted(set(symbols) - set(self.species))
            if missing:
                raise InputError(f"{source}: species {', '.join(missing)} not in potential {self.name} "
                                 f"(which has {', '.join(self.species)})")
        names = self.species or sorted(set(symbols))
        return np.array([names.index(s) for s in symbols], dtype=np.int64)

    def evaluate(self, atoms) -> Evaluation:
        work = atoms.copy()
        work.calc = self.calculator
        energy = float(work.get_potential_energy())
        forces = np.array(work.get_forces())
        try:
            stress = np.array(work.get_stress(voigt=False))
        except Exception:  # not every calculator gives a stress
            stress = np.full((3, 3), np.nan)
        try:
            energies = np.array(work.get_potential_energies())
        except Exception:
            energies = np.full(len(work), energy / len(work))
        return Evaluation(energy, forces, stress, energies)

    def hessian_rows(self, atoms, rows: np.ndarray | None = None, cell_list=None) -> BlockRows:
        """Block rows of the coloured central-difference Hessian (eV/Å²); all rows are computed
        once per configuration and cached. A few rows of an uncached configuration (fewer than
        the colours of the whole matrix, e.g. the one row of a perfect crystal's Bloch sum) are
        computed alone: 6 force calls per row (:func:`~hpcvib.potentials.fdhessian.fd_block_rows`)."""
        n = len(atoms)
        rows = np.arange(n, dtype=np.int64) if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
        key = (atoms.positions.tobytes(), np.asarray(atoms.get_cell()).tobytes(), atoms.numbers.tobytes())
        cached = self._hessian_cache is not None and self._hessian_cache[0] == key
        if not cached and len(rows) < self.FEW_ROWS:
            return self._few_rows(atoms, rows)
        if not cached:
            from hpcvib.potentials.fdhessian import coloured_fd_hessian

            h, _ = coloured_fd_hessian(atoms, self.calculator, 2.0 * self.cutoff, FD_STEP)
            bsr = h.tobsr(blocksize=(3, 3))
            bsr.sort_indices()
            self._hessian_cache = (key, bsr)
        bsr = self._hessian_cache[1]
        counts = np.diff(bsr.indptr)[rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        take = np.concatenate([np.arange(bsr.indptr[r], bsr.indptr[r + 1]) for r in rows]) if len(rows) else \
            np.zeros(0, dtype=np.int64)
        return BlockRows(n, rows, indptr, bsr.indices[take].astype(np.int64), np.ascontiguousarray(bsr.data[take]))

    #: below this many requested rows, rows are differenced one atom at a time, not by colours
    FEW_ROWS = 8

    def _few_rows(self, atoms, rows) -> BlockRows:
        from hpcvib.potentials.fdhessian import fd_block_rows

        found = fd_block_rows(atoms, self.calculator, rows, 2.0 * self.cutoff, FD_STEP)
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(cols) for cols, _ in found], out=indptr[1:])
        cols = np.concatenate([c for c, _ in found]).astype(np.int64) if found else np.zeros(0, dtype=np.int64)
        blocks = np.concatenate([b for _, b in found]) if found else np.zeros((0, 3, 3))
        return BlockRows(len(atoms), rows, indptr, cols, np.ascontiguousarray(blocks))

    def _accumulate_hessian(self, nl, species, row_slot, indptr, cols, blocks):  # pragma: no cover
        raise NotImplementedError("the Hessian of an ASE calculator comes from hessian_rows")
