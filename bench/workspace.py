"""A throwaway copy of this repository, for the benchmark and the end-to-end tests."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("data/raw/chest-xray-pneumonia", "data/raw/covid-chestxray-dataset")


def copy_repository(target, root=ROOT):
    """The files git tracks or would track (not ignored ones), copied to target."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (root / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / name, target / name)


def python_first_env():
    """os.environ with this Python's folder first on PATH, so a stage's `python` is this one."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
