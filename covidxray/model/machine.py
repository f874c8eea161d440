"""What this machine runs the backbone on: Keras's backend and device, and the faster precision.

`backbone.precision: auto` measures, once per machine, backend and device, whether VGG16's
convolutions run faster in bfloat16 than in float32. GPUs and CPUs with bfloat16 kernels (AMX,
AVX-512 BF16 where the backend uses it) run them up to several times faster; elsewhere bfloat16
is emulated and no faster, or slower. The answer is kept in a small file, so that every stage
of a run, and every rerun, builds the same backbone.
"""

import json
import os
import platform
import time
from pathlib import Path

import keras

POLICIES = ("float32", "mixed_bfloat16")
MARGIN = 1.25     # bfloat16 must be this much faster: a close call would flip between runs
SECONDS = 0.5     # of timing per policy


def device():
    """Which backend and device Keras trains on, e.g. `tensorflow:cpu` or `jax:gpu`."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpu = bool(tf.config.list_physical_devices("GPU"))
    elif backend == "jax":
        import jax

        gpu = jax.default_backend() == "gpu"
    else:
        import torch

        gpu = torch.cuda.is_available()
    return f"{backend}:{'gpu' if gpu else 'cpu'}"


def processor():
    """The CPU's model name (the cache's key: a GPU is named by the device alone)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines
                 if line.startswith("model name")), platform.processor() or "unknown")


def rate(step, seconds, items=1):
    """items a second of step(), after one warm-up call (which compiles), over `seconds`."""
    step()
    started, n = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - started) < seconds:
        step()
        n += items
    return n / elapsed


def conv_rate(dtype, seconds=SECONDS):
    """3x3 convolutions a second of VGG16's block3 shape (256 channels at 38 x 38, 8 images)."""
    x = keras.ops.cast(keras.random.uniform((8, 38, 38, 256), seed=0), dtype)
    kernel = keras.ops.cast(keras.random.uniform((3, 3, 256, 256), seed=1) / 256, dtype)
    return rate(lambda: keras.ops.convert_to_numpy(keras.ops.conv(x, kernel, padding="same")),
                seconds)


def measured_precision():
    """mixed_bfloat16 if bfloat16 convolutions run MARGIN times faster here, else float32,
    with the two rates."""
    rates = {policy: conv_rate("bfloat16" if "bfloat16" in policy else "float32")
             for policy in POLICIES}
    faster = rates["mixed_bfloat16"] >= MARGIN * rates["float32"]
    return {"precision": POLICIES[faster], "convs_per_s": rates}


def remembered(name, key, measure):
    """measure()'s answer for `key` (this machine and what was measured), measured once and
    then read from covidxray/<name>.json in the user's cache folder, so that every stage and
    rerun here gets the same."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "covidxray"
    path = cache / f"{name}.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = measure()
        print(f"{name}: measured {known[key]} on {key}; kept in {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(known, indent=2) + "\n")
        except OSError as err:  # a read-only home: measured again next time
            print(f"{name}: cannot keep it in {path} ({err})")
    return known[key]


def here():
    """The device and CPU: what a remembered measurement holds for."""
    return f"{device()} on {processor()}"


def auto_precision():
    return remembered("precision", here(), measured_precision)["precision"]


def resolved_precision(precision):
    """The Keras dtype policy a backbone.precision value stands for."""
    return auto_precision() if precision == "auto" else precision
