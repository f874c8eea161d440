"""A throwaway copy of this repository, for the benchmarks and the end-to-end tests, and how
the benchmarks time a command and name the machine."""

import os
import platform
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import yaml

from covidxray.model.machine import processor
from covidxray.paths import RAW

ROOT = Path(__file__).resolve().parents[1]


def raw_sources(root=ROOT):
    """The source folders in data/raw that the pipeline's stages read, as dvc.yaml lists them
    in their deps: a copy made from these has every source merge needs, with no list of its own
    to fall behind."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    deps = (dep for stage in stages.values() for dep in stage.get("do", stage).get("deps", []))
    return sorted({dep for dep in deps if Path(dep).parent == RAW})


def tree_files(root=ROOT):
    """The files git tracks or would track (not ignored ones), relative to root."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    return [name for name in names if name and (root / name).is_file()]


def copy_repository(target, root=ROOT):
    """tree_files, copied to target."""
    for name in tree_files(root):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, target / name)


def python_first_env():
    """os.environ with this Python's folder first on PATH, so a stage's `python` is this one."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


# Linux starts a new process's peak memory at its parent's, across fork and exec: a command
# forked from a benchmark holding 200 MiB would never report less. A bare Python forks it
# instead and writes the command's own peak (KiB, with every descendant it waited for).
PEAK = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed(args, cwd, log):
    """Run a command; its wall seconds, peak memory (MiB, whole process tree) and output."""
    peak = Path(f"{log}.peak")
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-c", PEAK, str(peak), *map(str, args)], cwd=cwd,
                              env=python_first_env(), stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    output = Path(log).read_text()
    if done.returncode:
        sys.exit(f"error: {' '.join(args)} failed; its output is in {log}:\n{output[-2000:]}")
    return {"seconds": wall, "peak_mib": int(peak.read_text()) / 1024, "output": output}


def machine():
    cpu = processor()
    gpu = shutil.which("nvidia-smi") and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu or "none",
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "python": platform.python_version(),
            "packages": {p: version(p) for p in ("tensorflow", "keras", "tf_keras", "dvc")}}
