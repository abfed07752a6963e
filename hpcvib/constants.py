"""Physical constants and unit conversions (THEORY.md §1).

Units of hpcvib: energy eV, length Å, mass amu, temperature K, frequency THz, entropy k_B.
The Hessian H is in eV/Å²; the dynamical matrix D = M^-1/2 H M^-1/2 in eV/(Å² amu).
"""

#: Boltzmann constant, eV/K.
KB_EV_PER_K = 8.617333262e-5
#: Reduced Planck constant, eV s.
HBAR_EV_S = 6.582119569e-16
#: Angular frequency (rad/s) of an eigenvalue λ = 1 eV/(Å² amu) of D: ω = sqrt(λ) · OMEGA_UNIT.
OMEGA_UNIT_RAD_PER_S = 9.82269475e13
#: Ordinary frequency (THz) of λ = 1 eV/(Å² amu): ν = sqrt(λ) · NU_UNIT_THZ (= OMEGA_UNIT / 2π / 1e12).
NU_UNIT_THZ = 15.6333042
#: ħ times one unit of angular frequency, eV (ħ c in THEORY §4).
HBAR_OMEGA_UNIT_EV = 6.4654151e-2
#: Time unit sqrt(amu Å² / eV), ps.
TIME_UNIT_PS = 1.0180506e-2
#: Reference frequency for logarithms ln(ν/ν0), THz.
NU0_THZ = 1.0
#: Eigenvalue tolerance of the paper's Lanczos (1e-6 in eV/(Å² amu)).
PAPER_EIGENVALUE_TOL = 1.0e-6
#: Avogadro constant, 1/mol (for densities in g/cm³).
AVOGADRO = 6.02214076e23
#: Atomic mass unit in grams (1/N_A), for densities in g/cm³ from amu/Å³ (× 1e24).
AMU_G = 1.0 / AVOGADRO
