"""Pipeline throughput: configurations per core-hour for 1024-atom bcc Fe cells through
relax + exact S_f (inertia + ln det') + descriptors (issue target: >= 1000 per core-hour).

Runs jobs/fe_demo.toml's generate/relax/thermo/descriptors stages (no fit/report) in a fresh
database under ``mpiexec -n R`` (one configuration per rank), and reports
configurations / (wall seconds × R / 3600), where configurations are those that went through
all three stages (failed ones cost time too and are counted in the wall time only).

    python bench/pipeline.py --ranks 1 2
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _util import append_result  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results", "pipeline.jsonl")


def job_text(db):
    with open(os.path.join(ROOT, "jobs", "fe_demo.toml")) as fh:
        text = fh.read()
    text = text.replace('database = "runs/fe_demo/fe_demo.h5"', f'database = "{db}"')
    return text.split("[fit]")[0]


def run(ranks: int) -> dict:
    folder = tempfile.mkdtemp(prefix="hpcvib-bench-")
    try:
        job = os.path.join(folder, "job.toml")
        with open(job, "w") as fh:
            fh.write(job_text(os.path.join(folder, "db.h5")))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
        cmd = [os.path.join(ROOT, ".venv", "bin", "hpcvib"), "-q", "run", job]
        if ranks > 1:
            flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
            cmd = [shutil.which("mpiexec"), *flags, "-n", str(ranks)] + cmd
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        wall = time.perf_counter() - t
        status = subprocess.run([os.path.join(ROOT, ".venv", "bin", "hpcvib"), "status",
                                 os.path.join(folder, "db.h5"), "--json"], check=True, env=env,
                                capture_output=True, text=True)
        import json

        s = json.loads(status.stdout)
        done = s["counts"].get("descriptors", {}).get("ok", 0)
        return {"bench": "pipeline", "cell_atoms": 1024, "ranks": ranks, "wall_s": wall,
                "configurations": done, "attempted": sum(s["counts"]["relax"].values()),
                "configs_per_core_hour": done / (wall * ranks / 3600.0),
                "task_configs_per_core_hour": s["configs_per_core_hour"],
                "date": time.strftime("%Y-%m-%d")}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    for r in args.ranks:
        row = run(r)
        append_result(RESULTS, row)
        print(f"{r} rank(s): {row['configurations']} configurations in {row['wall_s']:.1f} s -> "
              f"{row['configs_per_core_hour']:.0f} per core-hour (tasks alone: {row['task_configs_per_core_hour']:.0f})",
              flush=True)


if __name__ == "__main__":
    main()
