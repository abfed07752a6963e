"""The paper's physics: harmonic thermodynamics (every equation with its number), local entropies, compensation law."""
