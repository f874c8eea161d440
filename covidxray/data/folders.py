"""A source's folders as the readers reach them: listed, checked for what the user running the
pipeline may read, and names that are not UTF-8 told apart. A folder that cannot be read stops
the stage (it is a whole source or class, not one file); a name that is not UTF-8 is a recorded
skip, since the manifest and the other tables must stay UTF-8."""

import os
import re
from pathlib import Path

from covidxray.errors import PipelineError
from covidxray.paths import RAW

NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what decoding with surrogateescape makes of bad bytes


def shown(path):
    """A path as valid UTF-8 text for the report: bytes that are not UTF-8 as \\xNN."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def misnamed(path, skipped):
    """Whether `path` is not valid UTF-8 (its bad bytes decoded with surrogateescape); such a
    path goes to `skipped`, since the manifest and the other CSV files must stay UTF-8."""
    if NOT_UTF8.search(str(path)):
        skipped.append({"path": shown(path),
                        "reason": "file or folder name is not valid UTF-8; rename it"})
        return True
    return False


def unreadable(folder, err):
    """The stop for a source's folder that cannot be read: it is the whole source, or a whole
    class of it, not one file, so leaving it out would change the data without a word."""
    if not isinstance(err, PermissionError):
        return PipelineError(f"{shown(folder)}: cannot read this folder of the source"
                             f" ({err.strerror}); check the folder and the disk it is on")
    return PipelineError(f"{shown(folder)}: permission denied, cannot read this folder of the"
                         " source; let the user who runs the pipeline read it (e.g."
                         f" `chmod -R a+rX {shown(folder)}`){rehashed(folder)}")


def rehashed(folder):
    """DVC hashes a `dvc add`-ed source before any stage runs, without what it cannot read, and
    rewrites its .dvc file: what to do before a `dvc checkout` deletes what it did not see."""
    source = next((p for p in [Path(folder), *Path(folder).parents] if p.parent == RAW), None)
    tracked = source and source.with_name(f"{source.name}.dvc")
    if not (tracked and tracked.is_file()):
        return ""
    return (f"; then `git checkout {tracked}` if git shows it changed (DVC re-hashed the source"
            " without that folder), before any `dvc checkout`")


def listing(folder):
    """The entries of one of a source's folders, by name; one that cannot be read stops the
    stage (unreadable)."""
    try:
        found = sorted(Path(folder).iterdir())
        for path in found[:1]:
            os.lstat(path)  # listing needs read permission, reaching a file search permission
        return found
    except OSError as err:
        raise unreadable(folder, err) from err


def blocked(path):
    """The first folder on the way to `path` that cannot be searched."""
    for step in [*reversed(path.parents), path][1:]:
        try:
            os.lstat(step)
        except PermissionError:
            return step.parent
    return path.parent


def present(path, kind=Path.is_file):
    """Whether `path` is there and of its kind (Path.is_file, Path.is_dir); a folder on the way
    that cannot be searched stops the stage (unreadable), where is_file would raise."""
    try:
        return kind(path)
    except PermissionError as err:
        raise unreadable(blocked(path), err) from err


def named_folder(root, folder, key, name):
    """`root`/`folder`, which params key `key` names as `name`; a missing one stops the stage,
    naming the root itself where that is what is missing."""
    if not present(Path(root), Path.is_dir):
        raise PipelineError(f"{root}: missing (the folder that {key} names {name!r} in)")
    directory = Path(root) / folder
    if not present(directory, Path.is_dir):
        raise PipelineError(f"{directory}: missing ({key} names {name!r})")
    return directory


def folder_files(directory, skipped):
    """The entries of a class folder that may be images, by name; a name that is not UTF-8 and
    a folder inside it go to `skipped`. A broken link or a FIFO is kept: the decoder says why it
    cannot be read."""
    for path in listing(directory):
        if misnamed(path, skipped):
            continue
        if path.is_dir():
            skipped.append({"path": str(path), "reason": "a folder, not an image"})
        else:
            yield path
