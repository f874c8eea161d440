"""Shared by every stage: paths, params and their checks, file I/O, image decoding, errors."""

import contextlib
import functools
import hashlib
import json
import os
import signal
import sys
import threading
import time
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

CLASSES = ("normal", "bacterial", "viral", "covid", "pneumonia_other")  # the last: NIH, untyped
SOURCES = ("kermany", "covid-chestxray", "nih", "hannover")  # the manifest's `source` values
PARAMS_FILE = Path("params.yaml")
RAW = Path("data/raw")
MANIFEST = Path("data/merged/manifest.csv")
SPLIT_DIR = Path("data/split")
SPLITS = ("train", "val", "test")
PREPARED_IMAGES = Path("data/prepared/images")  # every manifest image, decoded, in its order
FEATURES = Path("data/features")  # their backbone features: plain/ and the bank's view-NN/
EXTERNAL = Path("data/external")  # the extra evaluation sets, decoded (stages/external.py)
MODELS = Path("models")
METRICS = Path("metrics")
EXTERNAL_METRICS = METRICS / "external"  # evaluate's scores of each external set
PLOTS = Path("plots")
MIN_SIZE = 32  # image_size: pixels a side that VGG16's five 2x2 poolings need
MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # PIL's decompression-bomb guard: 89,478,485 (about 9459 px square)
TASK_PLOTS = ("history", "confusion", "roc", "gallery", "gradcam")  # plots/<task>/<name>.png
AUGMENT_KEYS = ("rotation_degrees", "shift", "shear_degrees", "zoom", "channel_shift",
                "horizontal_flip", "vertical_flip", "fill_mode")
HEAD_CHOICES = {"pooling": ("flatten", "average", "average_max"),
                "class_weight": ("none", "balanced", "balanced_by_source")}
HEAD_FLAGS = ("normalize", "restore_best")
HEAD_LAYERS = ("pooling", "normalize", "units", "dropout", "l2")  # build_head's arguments


class PipelineError(Exception):
    """Bad input or params: the message names the file or key and the reason."""


class Stopped(BaseException):
    """SIGTERM, or the dvc process that started the stage died. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way up swallows it."""


def cli(main):
    """Run a stage's main(): a PipelineError ends it with its message instead of a traceback,
    Ctrl-C and SIGTERM with one line that says how to resume. Under DVC it also stops when dvc
    dies, so an orphan never rewrites outputs that a later run restored."""

    @functools.wraps(main)
    def run(*args):
        previous = signal.signal(signal.SIGTERM, _stop)
        if "DVC_STAGE" in os.environ:
            stop_with_parents()
        try:
            return main(*args)
        except PipelineError as err:
            sys.exit(f"error: {err}")
        except (KeyboardInterrupt, Stopped) as err:
            print(f"interrupted: {stage_name(main, args)} stopped ({str(err) or 'Ctrl-C'}) and left"
                  " every output it had not finished as it was; run `dvc repro` to resume"
                  " (stages that finished are not run again)", file=sys.stderr)
            sys.exit(130)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return run


def _stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def stage_name(main, args):
    """train@three under DVC, else the command that ran it."""
    spec = sys.modules[main.__module__].__spec__
    command = f"python -m {spec.name}" if spec else f"python {sys.argv[0]}"
    return os.environ.get("DVC_STAGE") or " ".join([command, *map(str, args)])


def parent_of(pid):
    """The parent process id, or None once the process is gone (Linux /proc; elsewhere only
    this process's own parent is known)."""
    if pid == os.getpid():
        return os.getppid()
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def is_shell_command(pid):
    """Whether the process is `<shell> [options] -c <command>`, as DVC starts a stage."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"-c" in argv[1:-1]


def stop_with_parents(seconds=1.0):
    """SIGTERM this process once the dvc process that runs it dies. DVC starts a stage through
    `$SHELL -c`, and the shell may stay in between; a dead process's children are re-parented
    at once, even while it is an unreaped zombie, so a changed parent id is the sign. dvc's own
    parent is not watched: `nohup dvc repro &` outlives its terminal, and so do its stages."""
    chain = [os.getpid(), os.getppid()]
    if is_shell_command(chain[-1]) and parent_of(chain[-1]) not in (None, 0, 1):
        chain.append(parent_of(chain[-1]))
    links = list(zip(chain, chain[1:]))

    def watch():
        while all(parent_of(child) == parent for child, parent in links):
            time.sleep(seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parents", daemon=True).start()


def task_argument(stage):
    """The one command-line argument of a per-task stage."""
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m stages.{stage} TASK")
    return sys.argv[1]


def load_params(path=PARAMS_FILE):
    """params.yaml, with the one value every stage uses checked; each stage checks its sections."""
    try:
        params = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PipelineError(f"{path}: cannot read params ({err})") from err
    if not isinstance(params, dict):
        raise PipelineError(f"{path}: cannot read params (not a mapping of keys to values)")
    whole_number(params.get("seed"), "seed", 0)
    return params


def task_params(params, task):
    """The params of one task, checked: it exists and names only known classes and sources."""
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
    sources = spec.get("sources")
    if not sources or not isinstance(sources, list) or any(s not in SOURCES for s in sources):
        raise PipelineError(f"params.yaml: tasks.{task}.sources must list sources of"
                            f" {', '.join(SOURCES)}; got {sources!r}")
    return spec


def shard_size(params):
    return whole_number(params.get("shard_size", 1024), "shard_size", 1)


def whole_number(value, key, minimum):
    """A params.yaml value that must be an integer >= minimum; `key` names it in the error."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise PipelineError(f"params.yaml: {key} must be a whole number >= {minimum},"
                            f" got {value!r}")
    return value


def is_number(value):
    """An int or a float, and not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(value, key, low, high, allowed):
    """A params.yaml number within `allowed`, a phrase such as "in [0, 1)", checked by the caller's
    bounds: low <= value (< high when given)."""
    if not is_number(value) or value < low or (high is not None and value >= high):
        raise PipelineError(f"params.yaml: {key} must be a number {allowed}, got {value!r}")
    return float(value)


def positive_number(value, key):
    if not is_number(value) or not value > 0:
        raise PipelineError(f"params.yaml: {key} must be a number > 0, got {value!r}")
    return float(value)


HEAD_KEYS = (*HEAD_CHOICES, *HEAD_FLAGS, "units", "dropout", "l2", "variance_floor")


def head_params(params, task=None):
    """The `head` section, checked: every key present, with an allowed value. With `task`, its
    `tasks.<task>.head` replaces those of the keys it names (checked as that task's)."""
    head = params.get("head") or {}
    missing = [k for k in HEAD_KEYS if k not in head]
    if missing:
        raise PipelineError(f"params.yaml: head is missing {', '.join(missing)}")
    head = checked_head(head, "head")
    overrides = ((params.get("tasks") or {}).get(task) or {}).get("head") if task else None
    if overrides is None:
        return head
    where = f"tasks.{task}.head"
    unknown = ([k for k in overrides if k not in HEAD_KEYS] if isinstance(overrides, dict)
               else [overrides])
    if unknown or not overrides:
        raise PipelineError(f"params.yaml: {where} must map keys of head ({', '.join(HEAD_KEYS)})"
                            f" to values; got {unknown or overrides!r}")
    return checked_head({**head, **overrides}, where)


def choice(value, key, choices):
    """A params.yaml value that must be one of `choices`; `key` names it in the error."""
    if value not in choices:
        raise PipelineError(f"params.yaml: {key} must be one of {', '.join(choices)},"
                            f" got {value!r}")
    return value


def checked_head(head, where):
    for key, choices in HEAD_CHOICES.items():
        choice(head[key], f"{where}.{key}", choices)
    for key in HEAD_FLAGS:
        if not isinstance(head[key], bool):
            raise PipelineError(f"params.yaml: {where}.{key} must be true or false,"
                                f" got {head[key]!r}")
    return {**head, "units": whole_number(head["units"], f"{where}.units", 0),
            "dropout": number(head["dropout"], f"{where}.dropout", 0, 1, "in [0, 1)"),
            "l2": number(head["l2"], f"{where}.l2", 0, None, ">= 0"),
            "variance_floor": number(head["variance_floor"], f"{where}.variance_floor", 0, None,
                                     ">= 0")}


def fine_tune_params(params):
    """backbone.feature_block, backbone.trainable_blocks and, when blocks are trained, their
    learning rate and epochs."""
    backbone = params["backbone"]
    top = backbone.get("feature_block", 5)
    if top not in range(1, 6) or isinstance(top, bool):
        raise PipelineError(f"params.yaml: backbone.feature_block must be 1 to 5, got {top!r}")
    blocks = backbone.get("trainable_blocks", 0)
    if blocks not in range(top) or isinstance(blocks, bool):
        raise PipelineError(f"params.yaml: backbone.trainable_blocks must be 0 (frozen) to"
                            f" {top - 1} (below backbone.feature_block), got {blocks!r}")
    if not blocks:
        return {"blocks": 0, "feature_block": top}
    return {"blocks": blocks, "feature_block": top,
            "lr": positive_number(backbone.get("fine_tune_lr"), "backbone.fine_tune_lr"),
            "epochs": whole_number(backbone.get("fine_tune_epochs"),
                                   "backbone.fine_tune_epochs", 1)}


def augment_params(params):
    """The augmentation's settings: `augment` names a preset of `augment_presets`, or holds them."""
    augment = params.get("augment")
    if isinstance(augment, str):
        presets = params.get("augment_presets") or {}
        if augment not in presets:
            raise PipelineError(f"params.yaml: augment names no preset of augment_presets"
                                f" ({', '.join(presets)}), got {augment!r}")
        where, augment = f"augment_presets.{augment}", presets[augment]
    else:
        where = "augment"
    missing = [k for k in AUGMENT_KEYS if k not in (augment or {})]
    if missing:
        raise PipelineError(f"params.yaml: {where} is missing {', '.join(missing)}")
    return {key: augment[key] for key in AUGMENT_KEYS}


def read_recipe(params, task):
    """Every param that decides how a task's model trains, checked before anything runs."""
    spec = task_params(params, task)
    whole_number(spec.get("epochs"), f"tasks.{task}.epochs", 1)
    whole_number(spec.get("batch_size"), f"tasks.{task}.batch_size", 1)
    positive_number(spec.get("lr"), f"tasks.{task}.lr")
    recipe = {"task": spec, "head": head_params(params, task),
              "fine_tune": fine_tune_params(params), "seed": params["seed"],
              "views": whole_number(params["bank"]["views"], "bank.views", 0),
              "plain_view": params["bank"].get("plain_view"), "augment": augment_params(params),
              "shard_size": shard_size(params)}
    if not isinstance(recipe["plain_view"], bool):
        raise PipelineError("params.yaml: bank.plain_view must be true or false,"
                            f" got {recipe['plain_view']!r}")
    recipe["bank"] = bool(recipe["views"] or recipe["plain_view"])
    if recipe["fine_tune"]["blocks"] and not recipe["bank"]:
        raise PipelineError("params.yaml: backbone.trainable_blocks > 0 needs the bank"
                            " (bank.views > 0 or bank.plain_view)")
    return recipe


def external_rows(params, name, key):
    """The rows of external set `name`, which params key `key` names (the external stage's
    data/external/<name>.csv); refused when no such set is under `external`."""
    if name not in (params.get("external") or {}):
        raise PipelineError(f"params.yaml: {key} names {name!r}, which is not a set under"
                            " `external`")
    return pd.read_csv(EXTERNAL / f"{name}.csv")


def read_json(path):
    return json.loads(Path(path).read_text())


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


def write_json(path, data):
    with replacing(path) as partial:
        partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_table(table, path):
    with replacing(path) as partial:
        table.to_csv(partial, index=False)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
    """An .npz of arrays made from the manifest, stamped with its digest (see read_arrays).

    np.savez would stamp each entry with the time of writing; a fixed time makes the same arrays
    the same bytes, so DVC sees an unchanged output as unchanged.
    """
    arrays = {"manifest_sha256": np.array(manifest_digest()), **arrays}
    with replacing(path) as partial, zipfile.ZipFile(partial, "w", allowZip64=True) as npz:
        for name, array in arrays.items():
            with npz.open(zipfile.ZipInfo(f"{name}.npy"), "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)


def task_rows(rows, spec, where):
    """A table's rows of a task's classes and sources (spec: its params), with the label index
    of each. `where` names the table in the error raised when a class has no rows."""
    classes = spec["classes"]
    rows = rows[rows["class"].isin(classes) & rows["source"].isin(spec["sources"])].copy()
    missing = sorted(set(classes) - set(rows["class"]))
    if missing:
        raise PipelineError(f"{where}: no images of class(es) {', '.join(missing)};"
                            " check merge.per_class and the split params")
    rows["label"] = rows["class"].map({c: i for i, c in enumerate(classes)})
    return rows


def write_split(parts):
    """The split's tables, and the manifest they were drawn from (read_split checks it)."""
    for name, rows in parts.items():
        write_table(rows, SPLIT_DIR / f"{name}.csv")
    write_json(SPLIT_DIR / "made_from.json", {"manifest_sha256": manifest_digest()})


def read_split(name, spec):
    """One split's rows of a task (spec: its params). Column `image` is each image's manifest
    row, and so its index in the prepared images and the features."""
    path = SPLIT_DIR / f"{name}.csv"
    record = SPLIT_DIR / "made_from.json"
    recorded = read_json(record) if record.is_file() else {}
    made_from_manifest(path, recorded.get("manifest_sha256"), "split")
    return task_rows(pd.read_csv(path), spec, path)


def open_rgb(path):
    """Decode any image to 8-bit RGB; raises PipelineError naming the file if it can't.

    Images over PIL's decompression-bomb limit (MAX_PIXELS) are refused before decoding.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # decodes fully, so a truncated file fails here and not later
                return _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise PipelineError(f"{path}: too large, over {MAX_PIXELS:,} pixels ({err})") from err
    except Exception as err:  # PIL's format plugins raise many types on malformed files
        raise PipelineError(f"{path}: not a readable image ({type(err).__name__}: {err})") \
            from err


def _to_rgb(img):
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit X-rays store 10 to 16 significant bits, and the header does not say how many:
        # stretch the range actually used onto 0-255.
        pixels = np.asarray(img, dtype=np.float64)
        low, high = pixels.min(), pixels.max()
        scaled = (pixels - low) * (255.0 / max(high - low, 1e-9))
        img = Image.fromarray(scaled.round().astype(np.uint8))
    return img.convert("RGB")


def preprocess_params(params):
    """The `preprocess` section, checked: `crop`, the share of each side cut off before resizing,
    and `clahe`, the clip limit of adaptive histogram equalisation after it (0: off)."""
    section = params.get("preprocess") or {}
    return {"crop": number(section.get("crop", 0.0), "preprocess.crop", 0, 0.5, "in [0, 0.5)"),
            "clahe": number(section.get("clahe", 0.0), "preprocess.clahe", 0, 1, "in [0, 1)")}


def cropped(img, crop):
    """The PIL image less `crop` of its width and height on each side."""
    if not crop:
        return img
    w, h = img.size
    dx, dy = round(w * crop), round(h * crop)
    return img.crop((dx, dy, w - dx, h - dy))


def decoded(path, size, crop=0.0, clahe=0.0):
    """One image as a uint8 array of size x size x 3, squashed like the tutorial's loader, after
    cutting `crop` off each side; with `clahe`, the grey levels are then equalised by CLAHE at
    that clip limit (skimage's, on the resized image, so its tiles see the same anatomy whatever
    the source's resolution)."""
    img = cropped(open_rgb(path), crop).resize((size, size), Image.Resampling.BILINEAR)
    if clahe:
        from skimage import exposure  # here: the GPU check's machine has no scikit-image

        grey = exposure.equalize_adapthist(np.asarray(img.convert("L")), clip_limit=clahe)
        img = Image.fromarray(np.round(grey * 255).astype(np.uint8)).convert("RGB")
    return np.asarray(img)


def cores():
    return len(os.sched_getaffinity(0))


def _quiet_worker():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to report, once


def decode_all(paths, size, crop=0.0, clahe=0.0, workers=1):
    """Yield the `decoded` image of each path, in order, decoding on `workers` processes in
    chunks; the images are the same byte for byte whatever the number of workers."""
    paths = list(paths)
    decode = functools.partial(decoded, size=size, crop=crop, clahe=clahe)
    if workers < 2 or len(paths) < 2:
        yield from map(decode, paths)
        return
    # spawn: a forked child would inherit the watchdog thread's state and any held locks
    pool = ProcessPoolExecutor(min(workers, len(paths)), mp_context=get_context("spawn"),
                               initializer=_quiet_worker)
    done = 0
    try:
        chunk = max(1, min(32, len(paths) // (4 * workers)))
        for done, pixels in enumerate(pool.map(decode, paths, chunksize=chunk), start=1):
            yield pixels
    except BrokenProcessPool as err:  # a worker was killed (say for memory): no file to name
        raise PipelineError(f"a process decoding images died ({err}) at or after"
                            f" {paths[done]}") from err
    finally:
        pool.shutdown(cancel_futures=True)


def load_images(paths, size, crop=0.0, clahe=0.0, workers=1):
    """The `decoded` images of paths stacked, N x size x size x 3 (see decode_all)."""
    paths = list(paths)
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, pixels in enumerate(decode_all(paths, size, crop, clahe, workers)):
        out[i] = pixels
    return out


def read_arrays(path, stage):
    """An .npz file of write_arrays as a dict of arrays, refused when it was made from another
    manifest; `stage` is the one that rebuilds it."""
    try:
        with np.load(path) as arrays:
            arrays = dict(arrays)
    except (OSError, ValueError) as err:
        raise PipelineError(f"{path}: cannot read ({err}); run `dvc repro {stage}` to rebuild"
                            " it") from err
    recorded = arrays.pop("manifest_sha256", None)
    made_from_manifest(path, None if recorded is None else str(recorded), stage)
    return arrays
