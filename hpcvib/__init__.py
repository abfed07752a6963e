"""hpcvib: exact harmonic vibrational properties of defects and activated events at scale.

Units throughout: energy eV, length Å, mass amu, temperature K, frequency THz, entropy k_B
(see :mod:`hpcvib.constants`).
"""

__version__ = "0.1.0"
