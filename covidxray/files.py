"""Writing outputs whole or not at all (a file or a folder replaces the old one only once it is
complete), and reading and writing the JSON, CSV and .npz files the stages exchange."""

import contextlib
import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from covidxray.cli import PipelineError


@contextlib.contextmanager
def replacing(path):
    """A temporary file beside `path` (same suffix, which savez and Keras need) that replaces it
    only when the block ends normally: a stage that is stopped leaves the old file or none,
    never half of one. Only a SIGKILL of the stage itself can leave a `.<name>.partial-*` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing_folder(path):
    """A new folder beside `path` that replaces it only when the block ends normally, as
    `replacing` does for a file: a stopped stage leaves the old folder or none."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        shutil.rmtree(path, ignore_errors=True)
        os.replace(partial, path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def read_json(path):
    return json.loads(Path(path).read_text())


def write_json(path, data):
    with replacing(path) as partial:
        partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_table(table, path):
    with replacing(path) as partial:
        table.to_csv(partial, index=False)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_npz(path, arrays):
    """An .npz of named arrays. np.savez would stamp each entry with the time of writing; a
    fixed time makes the same arrays the same bytes, so DVC sees an unchanged output as such."""
    with replacing(path) as partial, zipfile.ZipFile(partial, "w", allowZip64=True) as npz:
        for name, array in arrays.items():
            with npz.open(zipfile.ZipInfo(f"{name}.npy"), "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)


def read_npz(path, stage):
    """An .npz file as a dict of arrays; `stage` is the one that rebuilds it."""
    try:
        with np.load(path) as arrays:
            return dict(arrays)
    except (OSError, ValueError) as err:
        raise PipelineError(f"{path}: cannot read ({err}); run `dvc repro {stage}` to rebuild"
                            " it") from err
