"""Training on several devices with Keras's own distribution: data-parallel, a model copy a device.

`distribution` in params.yaml: `auto` spreads each batch over every accelerator when there are
two or more and trains on the one device otherwise; `data_parallel` spreads it over every
device, CPUs included (two logical CPUs in the tests); `none` keeps one device. On JAX this is
keras.distribution.DataParallel, on TensorFlow tf.distribute.MirroredStrategy.

Several hosts (JAX only): start the same stage on every host with Keras's own settings,
KERAS_DISTRIBUTION_JOB_ADDRESSES (the first host's address:port), KERAS_DISTRIBUTION_NUM_PROCESSES
and KERAS_DISTRIBUTION_PROCESS_ID. Each process then feeds its share of every batch
(training.EvenShare), predicts on a copy of its own (undistributed), and only process 0 writes
outputs. TensorFlow's MultiWorkerMirroredStrategy does not train Keras 3 models
(keras-team/keras#20585).
"""

import contextlib
import functools
import os
import tempfile
from pathlib import Path

import keras
import numpy as np

from covidxray.errors import PipelineError

PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"


def process_count():
    """KERAS_DISTRIBUTION_NUM_PROCESSES, checked: 1 when unset."""
    value = os.environ.get(PROCESSES, "1")
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise PipelineError(f"{PROCESSES} must be a whole number of at least 1, got {value!r}")
    return count


@functools.cache
def process_share():
    """(this process's index, how many processes train together): (0, 1) for one host. Joins
    the others on first use, before any JAX computation, as jax.distributed must."""
    count = process_count()
    if count == 1:
        return 0, 1
    if keras.backend.backend() != "jax":
        raise PipelineError(f"{PROCESSES}={count}: training in several processes needs"
                            f" KERAS_BACKEND=jax, not {keras.backend.backend()}")
    for name, what in ((ADDRESSES, "the first host's address:port"),
                       (PROCESS_ID, f"this process's number, 0 to {count - 1}")):
        if not os.environ.get(name):
            raise PipelineError(f"{PROCESSES}={count} needs {name} too ({what});"
                                " docs/performance.md shows a run on several hosts")
    keras.distribution.initialize()
    import jax

    return jax.process_index(), jax.process_count()


def chief():
    """Whether this process writes the outputs: the only one, or process 0 of several."""
    return process_share()[0] == 0


def devices(setting, processes=1):
    """The devices to spread batches over: accelerators, or with data_parallel (or several
    processes without accelerators) every device."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        found = [f"{d.platform}:{d.id}" for d in jax.devices()]  # every process's
    elif backend == "tensorflow":
        import tensorflow as tf

        found = [d.name for d in tf.config.list_logical_devices("GPU")
                 or tf.config.list_logical_devices("CPU")]
    else:
        return []
    accelerators = [d for d in found if "CPU" not in d.upper()]
    return found if setting == "data_parallel" or (processes > 1 and not accelerators) \
        else accelerators


@contextlib.contextmanager
def distributed(setting, across_processes=True):
    """Build, compile and fit models inside this block; yields a line saying where they train.

    across_processes=False (the features pass): this process's devices only, and the
    KERAS_DISTRIBUTION_* variables are not read; a process started alone computes everything.
    """
    processes = process_share()[1] if across_processes else 1
    if setting == "none" and processes > 1:
        raise PipelineError(f"distribution is none but {PROCESSES}={processes}: set it to auto"
                            " or data_parallel, or start one process")
    chosen = devices(setting, processes) if setting != "none" else []
    if len(chosen) < 2:
        yield "one device"
        return
    if keras.backend.backend() == "jax":
        # with several processes each feeds its own share of a batch (training.EvenShare)
        keras.distribution.set_distribution(keras.distribution.DataParallel(
            devices=chosen, auto_shard_dataset=False))
        try:
            yield f"DataParallel over {len(chosen)} devices" + (
                f" in {processes} processes" if processes > 1 else "")
        finally:
            keras.distribution.set_distribution(None)
    else:
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(chosen)
        with strategy.scope():
            yield f"MirroredStrategy over {len(chosen)} devices"


def batch_split():
    """None, or under a Keras distribution (JAX) how each batch splits: (this process's index,
    the processes, the devices). A batch must divide evenly over the devices, and each process
    feeds its own share of it (training.EvenShare)."""
    spanning = keras.distribution.distribution()
    if spanning is None:
        return None
    return (*process_share(), spanning.device_mesh.devices.size)


def padded(array, multiple):
    """The array with rows of zeros after it, up to a multiple of `multiple` rows."""
    rows = -(-len(array) // multiple) * multiple
    return np.concatenate([array, np.zeros((rows - len(array), *array.shape[1:]), array.dtype)])


def predict_on_batch(model, batch):
    """model.predict_on_batch; under a Keras distribution in one process, spread over its
    devices: the batch padded to divide evenly over them, the padding's outputs dropped."""
    split = batch_split()
    if split is None:
        return model.predict_on_batch(batch)
    return np.asarray(model.predict_on_batch(padded(batch, split[2])))[:len(batch)]


@contextlib.contextmanager
def undistributed(model):
    """The model for predict(): itself, or under a Keras distribution a copy with the
    distribution lifted. Distributed, Keras's predict would need batches that divide over the
    devices, and with several processes returns arrays no process can read."""
    spanning = keras.distribution.distribution()
    if spanning is None:
        yield model
        return
    keras.distribution.set_distribution(None)
    try:
        copy = keras.models.clone_model(model)
        # through a file, as a saved model: loading sets up what adapt() set (Normalization's)
        with tempfile.TemporaryDirectory(prefix="undistributed-") as folder:
            model.save_weights(Path(folder) / "model.weights.h5")  # replicated, so readable
            copy.load_weights(Path(folder) / "model.weights.h5")
        yield copy
    finally:
        keras.distribution.set_distribution(spanning)
