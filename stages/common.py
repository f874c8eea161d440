"""Helpers shared by the stages: params, file I/O, image decoding and error reporting."""

import functools
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

CLASSES = ("normal", "bacterial", "viral", "covid")
PARAMS_FILE = Path("params.yaml")
RAW = Path("data/raw")
MANIFEST = Path("data/merged/manifest.csv")
SPLIT_DIR = Path("data/split")
SPLITS = ("train", "val", "test")
PREPARED_IMAGES = Path("data/prepared/images.npz")  # every manifest image, decoded, in its order
FEATURES = Path("data/features/features.npz")  # their backbone features and augmentation bank
MODELS = Path("models")
METRICS = Path("metrics")


class PipelineError(Exception):
    """Bad input or params: the message names the file or key and the reason."""


def cli(main):
    """Run a stage's main(); a PipelineError ends it with its message instead of a traceback."""

    @functools.wraps(main)
    def run(*args):
        try:
            return main(*args)
        except PipelineError as err:
            sys.exit(f"error: {err}")

    return run


def task_argument(stage):
    """The one command-line argument of a per-task stage."""
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m stages.{stage} TASK")
    return sys.argv[1]


def load_params(path=PARAMS_FILE):
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PipelineError(f"{path}: cannot read params ({err})") from err


def task_params(params, task):
    """The params of one task, checked: it exists and names only known classes."""
    tasks = params.get("tasks") or {}
    if task not in tasks:
        raise PipelineError(f"params.yaml: unknown task {task!r} (tasks: {', '.join(tasks)})")
    spec = tasks[task]
    classes = spec.get("classes") or []
    unknown = [c for c in classes if c not in CLASSES]
    if unknown or len(classes) < 2:
        raise PipelineError(
            f"params.yaml: tasks.{task}.classes must name at least two of {', '.join(CLASSES)};"
            f" got {classes}"
        )
    return spec


def whole_number(value, key, minimum):
    """A params.yaml value that must be an integer >= minimum; `key` names it in the error."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise PipelineError(f"params.yaml: {key} must be a whole number >= {minimum},"
                            f" got {value!r}")
    return value


def read_json(path):
    return json.loads(Path(path).read_text())


def write_json(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def task_rows(rows, classes, where):
    """A table's rows restricted to a task's classes, with the label index of each.

    `where` names the table in the error raised when a class has no rows.
    """
    rows = rows[rows["class"].isin(classes)].copy()
    missing = sorted(set(classes) - set(rows["class"]))
    if missing:
        raise PipelineError(f"{where}: no images of class(es) {', '.join(missing)};"
                            " check merge.per_class and the split params")
    rows["label"] = rows["class"].map({c: i for i, c in enumerate(classes)})
    return rows


def read_split(name, classes):
    """One split's rows of a task's classes. Column `image` is each image's manifest row,
    and so its index in the prepared images and the features."""
    path = SPLIT_DIR / f"{name}.csv"
    return task_rows(pd.read_csv(path), classes, path)


def open_rgb(path):
    """Decode any image to 8-bit RGB; raises PipelineError naming the file if it can't."""
    try:
        with Image.open(path) as img:
            img.load()  # decodes fully, so a truncated file fails here and not later
            return _to_rgb(img)
    except (OSError, SyntaxError, ValueError) as err:  # PIL's decode errors
        raise PipelineError(f"{path}: not a readable image ({err})") from err


def _to_rgb(img):
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit X-rays store 10 to 16 significant bits, and the header does not say how many:
        # stretch the range actually used onto 0-255.
        pixels = np.asarray(img, dtype=np.float64)
        low, high = pixels.min(), pixels.max()
        scaled = (pixels - low) * (255.0 / max(high - low, 1e-9))
        img = Image.fromarray(scaled.round().astype(np.uint8))
    return img.convert("RGB")


def load_images(paths, size):
    """Stack images as uint8 arrays of size x size x 3, squashed like the tutorial's loader."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = np.asarray(open_rgb(path).resize((size, size), Image.Resampling.BILINEAR))
    return out


def read_arrays(path):
    """An .npz file (prepared images, features) as a dict of arrays."""
    try:
        with np.load(path) as arrays:
            return dict(arrays)
    except (OSError, ValueError) as err:
        raise PipelineError(f"{path}: cannot read ({err}); run `dvc repro` to rebuild it") from err


def prepared_images(rows):
    """The decoded images of manifest rows (a split's, from read_split); no source is touched."""
    images = read_arrays(PREPARED_IMAGES)["images"]
    if len(images) <= rows["image"].to_numpy().max(initial=-1):
        raise PipelineError(f"{PREPARED_IMAGES}: fewer images than {MANIFEST};"
                            " run `dvc repro` to rebuild it")
    return images[rows["image"].to_numpy()]
