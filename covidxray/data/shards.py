"""Sharded arrays: how prepare and features store every image's pixels and features, so that no
stage holds all of them at once.

A sharded array is a folder: `shards.json` (rows, a row's shape, dtype, rows per shard and the
sha256 of the manifest it was made from) and `00000.npy`, `00001.npy`, ..., each `rows per shard`
rows but the last, which holds the rest. Each shard is a plain .npy file, which
np.load(path, mmap_mode="r") maps. Shards here reads them with os.pread, a range or a row at a
time, rather than a memory map: a mapped page counts in the process's resident memory once
touched, read bytes only while they are held.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from covidxray.data.provenance import made_from_manifest
from covidxray.errors import PipelineError
from covidxray.files import read_json, write_json
from covidxray.paths import FEATURES, MANIFEST, PREPARED_IMAGES

INDEX = "shards.json"


class ShardWriter:
    """Appends rows to a new sharded array in `folder`, one shard's rows held at a time."""

    def __init__(self, folder, row_shape, dtype, shard_size, made_from=None):
        self.folder, self.shard_size, self.made_from = Path(folder), shard_size, made_from
        self.folder.mkdir(parents=True, exist_ok=True)
        self.buffer = np.empty((shard_size, *row_shape), dtype)
        self.filled = self.shards = self.rows = 0

    def write(self, rows):
        """Append rows (any dtype that casts to the array's: bfloat16 features to float16)."""
        rows = np.asarray(rows)
        if rows.shape[1:] != self.buffer.shape[1:]:
            raise ValueError(f"{self.folder}: rows of shape {rows.shape[1:]}, not"
                             f" {self.buffer.shape[1:]}")
        while len(rows):
            take = min(self.shard_size - self.filled, len(rows))
            np.copyto(self.buffer[self.filled:self.filled + take], rows[:take], casting="unsafe")
            self.filled, rows = self.filled + take, rows[take:]
            if self.filled == self.shard_size:
                self._flush()

    def _flush(self):
        np.save(self.folder / f"{self.shards:05d}.npy", self.buffer[:self.filled])
        self.rows += self.filled
        self.shards, self.filled = self.shards + 1, 0

    def close(self):
        """Write the last, partial shard and the index."""
        if self.filled:
            self._flush()
        index = {"rows": self.rows, "row_shape": list(self.buffer.shape[1:]),
                 "dtype": self.buffer.dtype.name, "shard_size": self.shard_size,
                 "shards": self.shards, "manifest_sha256": self.made_from}
        write_json(self.folder / INDEX, index)


def write_shards(folder, batches, row_shape, dtype, shard_size, made_from=None):
    """A sharded array of the rows of `batches` (an iterable of arrays), in order; `made_from`,
    the sha256 of the manifest they come from, which Shards checks (None: a scratch array).
    A second thread writes each batch while the next one is computed."""
    writer = ShardWriter(folder, row_shape, dtype, shard_size, made_from)
    with ThreadPoolExecutor(1, thread_name_prefix="write-behind") as behind:
        pending = None
        for batch in batches:
            if pending is not None:
                pending.result()  # one batch in flight: the order kept, the memory bounded
            pending = behind.submit(writer.write, batch)
        if pending is not None:
            pending.result()
    writer.close()
    return writer.rows


class Shards:
    """A sharded array read lazily; indexing it (an int, a slice, a list or array of ints in any
    order) reads only those rows, as a numpy array of the stored dtype. Anything that takes an
    array's rows by index (the bank's batches, predictions over rows) takes one of these too.
    `stage` is the one that rebuilds the folder, named in every error."""

    def __init__(self, folder, stage):
        self.folder, self.stage = Path(folder), stage
        index = self.folder / INDEX
        if not index.is_file():
            raise PipelineError(f"{index}: missing; run `dvc repro {stage}`")
        meta = read_json(index)
        try:
            made_from, shape, dtype = meta["manifest_sha256"], meta["row_shape"], meta["dtype"]
            self.shard_size, rows = int(meta["shard_size"]), int(meta["rows"])
            self.row_shape, self.dtype = tuple(shape), np.dtype(dtype)
        except (KeyError, TypeError, ValueError) as err:
            raise PipelineError(f"{index}: not an index of shards ({err!r});"
                                f" {restore(stage)}") from err
        if made_from is not None:
            made_from_manifest(self.folder, made_from, stage)
        self.shape = (rows, *self.row_shape)
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self.opened = {}
        for k in range(-(-rows // self.shard_size)):  # every shard checked before any is read
            self._open(k)

    def __len__(self):
        return self.shape[0]

    def _open(self, k):
        """Shard k's file and the offset of its data, checked against the index."""
        if k not in self.opened:
            path = self.folder / f"{k:05d}.npy"
            rows = int(min(self.shard_size, len(self) - k * self.shard_size))
            self.opened[k] = (_open_checked(path, (rows, *self.row_shape), self.dtype,
                                            self.stage))
        return self.opened[k]

    def _range(self, start, stop):
        out = np.empty((stop - start, *self.row_shape), self.dtype)
        row = start
        while row < stop:
            k, first = divmod(row, self.shard_size)
            take = min(stop - row, self.shard_size - first)
            file, offset = self._open(k)
            # straight into the output: one copy out of the page cache, not two
            target = memoryview(out[row - start:row - start + take].reshape(-1).view(np.uint8))
            position, done = offset + first * self.row_bytes, 0
            while done < len(target):  # a read may stop short of a large request
                got = os.preadv(file.fileno(), [target[done:]], position + done)
                if not got:
                    raise PipelineError(f"{file.name}: ends early; run `dvc repro {self.stage}`")
                done += got
            row += take
        return out

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step)]
            return self._range(start, max(start, stop))
        if np.ndim(key) == 0:
            return self[np.array([key])][0]
        rows = np.asarray(key)
        if rows.dtype == bool:  # a mask, as numpy takes one
            if len(rows) != len(self):
                raise IndexError(f"{self.folder}: a mask of {len(rows)} rows for {len(self)}")
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64)
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"{self.folder}: rows {rows.min()}..{rows.max()} outside"
                             f" 0..{len(self) - 1}")
        rows = np.where(rows < 0, rows + len(self), rows).reshape(-1)
        # one read per run of consecutive rows: a range is one read, scattered rows one each
        runs = np.split(np.arange(len(rows)), np.flatnonzero(np.diff(rows) != 1) + 1)
        parts = [self._range(rows[run[0]], rows[run[-1]] + 1) for run in runs if len(run)]
        return np.concatenate(parts) if parts else np.empty((0, *self.row_shape), self.dtype)


def _open_checked(path, shape, dtype, stage):
    """An open shard and its data's offset; a clear error if it is missing, is not the .npy
    the index describes, or is cut short."""
    rebuild = restore(stage)
    try:
        file = open(path, "rb")
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}
        header = read_header[np.lib.format.read_magic(file)](file)
    except (OSError, ValueError, KeyError) as err:
        raise PipelineError(f"{path}: not a readable shard ({err}); {rebuild}") from err
    if header != (shape, False, dtype):
        file.close()
        raise PipelineError(f"{path}: holds {header[2]} of shape {header[0]}, where"
                            f" {path.parent / INDEX} says {dtype} of shape {shape}; {rebuild}")
    offset, size = file.tell(), os.fstat(file.fileno()).st_size
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if size != expected:
        file.close()
        raise PipelineError(f"{path}: {size:,} bytes where its header says {expected:,}"
                            f" (cut short?); {rebuild}")
    return file, offset


def restore(stage):
    """What brings back a damaged shard folder (plain `dvc checkout` refuses a changed one)."""
    return f"run `dvc repro {stage}` to rebuild it, or `dvc checkout --force {stage}`"


def prepared_images(rows=None):
    """The prepared images of manifest rows (a split's, from read_split), read lazily, in memory:
    for a handful of rows; all of them, lazily, without `rows`. No source file is touched."""
    images = Shards(PREPARED_IMAGES, "prepare")
    if rows is None:
        return images
    if len(images) <= rows["image"].to_numpy().max(initial=-1):
        raise PipelineError(f"{PREPARED_IMAGES}: fewer images than {MANIFEST};"
                            " run `dvc repro` to rebuild it")
    return images[rows["image"].to_numpy()]


def view_name(view):
    return f"view-{view:02d}"


def read_features(folder=FEATURES):
    """The features stage's outputs, read lazily: {"plain": Shards, "bank": [Shards per view]}."""
    views = sorted(Path(folder).glob("view-*"), key=lambda path: int(path.name[5:]))
    return {"plain": Shards(Path(folder) / "plain", "features"),
            "bank": [Shards(view, "features") for view in views]}
