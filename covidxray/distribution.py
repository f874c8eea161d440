"""Training on several devices with Keras's own distribution: data-parallel, one model copy a device.

`distribution` in params.yaml: `auto` spreads each batch over every accelerator when there are
two or more and trains on the one device otherwise; `data_parallel` spreads it over every
device, CPUs included (two logical CPUs in the tests); `none` keeps one device. On JAX this is
keras.distribution.DataParallel, on TensorFlow tf.distribute.MirroredStrategy. Several hosts are
not supported: Keras 3 does not train under TensorFlow's MultiWorkerMirroredStrategy
(keras-team/keras#20585).
"""

import contextlib

import keras

from covidxray.common import choice

SETTINGS = ("auto", "none", "data_parallel")


def distribution_param(params):
    return choice(params.get("distribution", "auto"), "distribution", SETTINGS)


def devices(setting):
    """The devices to spread batches over: accelerators, or with data_parallel every device."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        found = [f"{d.platform}:{d.id}" for d in jax.devices()]
    elif backend == "tensorflow":
        import tensorflow as tf

        found = [d.name for d in tf.config.list_logical_devices("GPU")
                 or tf.config.list_logical_devices("CPU")]
    else:
        return []
    return found if setting == "data_parallel" else [d for d in found if "CPU" not in d.upper()]


@contextlib.contextmanager
def distributed(setting):
    """Build, compile and fit models inside this block; yields a line saying where they train."""
    chosen = devices(setting) if setting != "none" else []
    if len(chosen) < 2:
        yield "one device"
        return
    if keras.backend.backend() == "jax":
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=chosen))
        try:
            yield f"DataParallel over {len(chosen)} devices"
        finally:
            keras.distribution.set_distribution(None)
    else:
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(chosen)
        with strategy.scope():
            yield f"MirroredStrategy over {len(chosen)} devices"
