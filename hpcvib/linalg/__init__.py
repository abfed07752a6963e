"""Sparse Hessians and their spectra: PETSc assembly, matrix files, log-determinants and eigenvalues."""
