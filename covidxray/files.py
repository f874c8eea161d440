"""Writing outputs whole or not at all (a file or a folder replaces the old one only once it is
complete), and reading and writing the JSON, CSV and .npz files the stages exchange."""

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np

from covidxray.errors import PipelineError


@contextlib.contextmanager
def replacing(path):
    """A temporary file beside `path` (same suffix, which savez and Keras need) that replaces it
    only when the block ends normally: a stage that is stopped leaves the old file or none,
    never half of one. Only a SIGKILL of the stage itself can leave a `.<name>.partial-*` file.
    A symbolic link is followed: the file it points to is replaced, on its own disk."""
    target = resolved(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.stem}.partial-{os.getpid()}{target.suffix}")
    try:
        with named_if_full(path, partial):
            yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing_folder(path, needs=0):
    """A new folder beside `path` that replaces it only when the block ends normally, as
    `replacing` does for a file: a stopped stage leaves the old folder or none. `needs`, the
    bytes the block will write, is checked against the free space first (the old folder stays
    until the new one is whole, so both must fit)."""
    target = resolved(path)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        has_room(path, partial, needs)
        with named_if_full(path, partial):
            yield partial
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def resolved(path):
    """`path`, or where it points when it is a symbolic link (an output moved to another disk
    by a link stays there, and the link stays a link). A linked output folder on the way to it
    gets back the mode DVC took (unshared)."""
    path = Path(path)
    if not path.is_absolute():  # outputs are named in the workspace, where DVC's links are
        for folder in path.parents:
            if folder.is_symlink():
                unshared(folder.resolve())
    return path.resolve() if path.is_symlink() else path


def unshared(folder):
    """Before a stage runs, DVC 3.67 removes its outputs; for a linked folder shutil.rmtree
    refuses, and DVC's error handler chmods the link's own mode (rwxrwxrwx) onto its target.
    A target left world-writable so gets the mode a new folder has (the umask's)."""
    if folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) == 0o777:
        umask = os.umask(0)
        os.umask(umask)
        folder.chmod(0o777 & ~umask)


def size_text(size):
    """A size in bytes, as people read it: 900 bytes, 71.0 KB, 1.5 GB."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} TB"


def has_room(path, partial, needs):
    free = shutil.disk_usage(partial).free
    if needs > free:
        raise PipelineError(f"{path}: needs about {size_text(needs)} and its disk has"
                            f" {size_text(free)} free; {FREE_SPACE}")


FREE_SPACE = ("free some space, or make it a symbolic link to a folder on a larger disk, and run"
              " the stage again")


@contextlib.contextmanager
def named_if_full(path, partial):
    """A write that fails because the disk filled up, as one line naming the output, what was
    written and what is free (numpy's short writes carry no errno: the free space tells)."""
    try:
        yield
    except OSError as err:
        free = shutil.disk_usage(partial.parent).free
        if err.errno != errno.ENOSPC and free >= 2**20:
            raise
        raise PipelineError(f"{path}: the disk filled up after {size_text(size_of(partial))}"
                            f" written ({size_text(free)} free); {FREE_SPACE}") from err


def size_of(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def read_json(path):
    """A JSON file the pipeline wrote; damaged, it is named with the way to restore it."""
    try:
        return json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PipelineError(f"{path}: not valid JSON ({err}); run `dvc repro` to rebuild it (a"
                            " stage whose outputs changed runs again), or `dvc checkout --force`"
                            " to restore the changed outputs from the cache") from err


def write_json(path, data):
    with replacing(path) as partial:
        partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_table(table, path):
    """A CSV file. A path that is not valid UTF-8 (a file name of raw bytes) is written as those
    same bytes, so the row still names the file on disk."""
    with replacing(path) as partial:
        table.to_csv(partial, index=False, errors="surrogateescape")


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
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise PipelineError(f"{path}: cannot read ({err}); run `dvc repro {stage}` to rebuild"
                            " it") from err
