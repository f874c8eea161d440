"""What each output was made from: the manifest's and the split's digests, recorded by the stage
that writes an output and checked by the stages that read it, so that no stage pairs rows of
one manifest (or split) with arrays or a model made from another."""

import hashlib

import numpy as np

from covidxray.errors import PipelineError
from covidxray.files import read_json, read_npz, sha256, write_npz
from covidxray.paths import MANIFEST, MODELS, SPLIT_DIR, SPLITS


def manifest_digest():
    """The sha256 of the manifest: every output made from it records the one it was made from."""
    if not MANIFEST.is_file():
        raise PipelineError(f"{MANIFEST}: missing; run `dvc repro merge`")
    return sha256(MANIFEST)


def split_digest():
    """The sha256 of the split's tables, which a trained model records."""
    return hashlib.sha256(b"".join((SPLIT_DIR / f"{name}.csv").read_bytes()
                                   for name in SPLITS)).hexdigest()


def made_from_manifest(path, recorded, stage):
    """Refuse an output made from another manifest than today's: it would pair the wrong rows."""
    if recorded != manifest_digest():
        raise PipelineError(f"{path} was made from another {MANIFEST} than the one there now;"
                            f" run `dvc repro {stage}` to rebuild it")


def trained_record(task):
    """models/<task>.json, train's record of the model, checked to be of today's split: a model
    of another split may have trained on today's test images."""
    path = MODELS / f"{task}.json"
    if not path.is_file():
        raise PipelineError(f"{path}: missing; run `dvc repro train@{task}`")
    record = read_json(path)
    if record.get("split_sha256") != split_digest():
        raise PipelineError(f"{MODELS / task}.keras was trained on another split than {SPLIT_DIR}"
                            f" holds; run `dvc repro train@{task}`")
    return record


def write_arrays(path, **arrays):
    """An .npz of arrays made from the manifest, stamped with its digest (see read_arrays)."""
    write_npz(path, {"manifest_sha256": np.array(manifest_digest()), **arrays})


def read_arrays(path, stage):
    """An .npz file of write_arrays as a dict of arrays, refused when it was made from another
    manifest; `stage` is the one that rebuilds it."""
    arrays = read_npz(path, stage)
    recorded = arrays.pop("manifest_sha256", None)
    made_from_manifest(path, None if recorded is None else str(recorded), stage)
    return arrays
