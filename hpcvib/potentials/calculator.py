"""ASE adapter: use any hpcvib potential as an :class:`ase.calculators.calculator.Calculator`,
so ASE optimisers, MD and NEB work with the built-ins."""

from __future__ import annotations

from ase.calculators.calculator import Calculator, all_changes

from hpcvib.potentials import load_potential


class HpcvibCalculator(Calculator):
    """Energy (eV), forces (eV/Å), stress (eV/Å³) and per-atom energies from an hpcvib potential.

    Parameters
    ----------
    potential : a built-in name (``Fe_mm``, ``Si_sw``, ``Si_sw_vink``), a file path, or a Potential.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, potential="Fe_mm", **kwargs):
        super().__init__(**kwargs)
        self.potential = load_potential(potential)
        self.n_calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        ev = self.potential.evaluate(self.atoms)
        self.n_calls += 1
        self.results = {
            "energy": ev.energy,
            "free_energy": ev.energy,
            "forces": ev.forces,
            "stress": ev.stress.ravel()[[0, 4, 8, 5, 2, 1]],
            "energies": ev.energies,
        }
