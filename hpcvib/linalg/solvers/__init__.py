"""One-process factorisation backends (CHOLMOD, sequential MUMPS with METIS) behind linalg.spectral."""
