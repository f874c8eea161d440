"""Keras's data-parallel training (covidxray/model/devices.py) against one device."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from covidxray.config.params import load_params
from covidxray.errors import PipelineError
from covidxray.model import devices
from covidxray.model.devices import distributed, process_share
from covidxray.model.inputs import EvenShare
from tests.conftest import ROOT, free_port, params_with

# Trains a head with fit_on_bank (the bank's PyDataset batches, balanced weights, the weights of
# the best epoch, Normalization adapted in the scope) on 41 images, so the last batch of 10 is one
# image and must be padded to split, and prints where it trained and what it predicts.
# TensorFlow: argv[2] logical CPUs; JAX: XLA_FLAGS and KERAS_DISTRIBUTION_* from the caller.
TRAIN = """
import json, sys
import numpy as np
import pandas as pd
import keras

setting, logical_cpus = sys.argv[1], int(sys.argv[2])
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]  # before TensorFlow starts its runtime
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()]
                                               * logical_cpus)
from covidxray.model import head as heads, training
from covidxray.model.classifier import head_probabilities
from covidxray.model.devices import chief, distributed
from covidxray.config.params import Recipe
from covidxray.config.schema import Augment, Backbone, Features, Head, Task

rng = np.random.default_rng(0)
plain, view = rng.normal(size=(2, 41, 2, 2, 8)).astype("float32")
rows = pd.DataFrame({"image": range(41), "label": (plain[:, 0, 0, 0] > 0).astype(int),
                     "source": "kermany"})
spec = Head(pooling="flatten", normalize=True, variance_floor=0.0, units=0, dropout=0.0, l2=0.01,
            class_weight="balanced", restore_best=True)
task = Task("binary", ("normal", "covid"), ("kermany",), epochs=3, lr=0.01, batch_size=10,
            head=spec)
still = Augment(0, 0, 0, 0, 0, False, False, "constant")
recipe = Recipe(task, Backbone("none", "float32"), Features(0, True, 10), still, seed=0,
                shard_size=1024)
with distributed(setting) as where:
    training.seed_everything(0)
    head = heads.build_head(2, (2, 2, 8), **spec.layers())
    training.fit_on_bank(head, {"bank": [view], "plain": plain}, rows, rows, recipe, verbose=0)
    probs = head_probabilities(head, plain, 10)[:, 1]
print(json.dumps({"where": where, "chief": chief(), "probs": probs.tolist()}))
"""


def start(backend, setting, logical_cpus=1, script=TRAIN, **env):
    return subprocess.Popen([sys.executable, "-c", script, setting, str(logical_cpus)], cwd=ROOT,
                            env={**os.environ, "KERAS_BACKEND": backend, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.splitlines()[-1])


@pytest.mark.slow
def test_two_cpu_devices_train_a_head_that_predicts_as_the_one_device_head_does():
    """MirroredStrategy splits each batch of 10 in two and sums the gradients. With arrays as
    input the weights match to float rounding; with the bank's PyDataset they drift apart (0.10
    in probability measured), hence the stated tolerance. The cause is Keras's: under a
    tf.distribute strategy it reads a PyDataset's batches out of step with on_epoch_begin, so
    some batches come from another epoch's order."""
    one, two = [result(run) for run in [start("tensorflow", setting, 2)
                                        for setting in ("none", "data_parallel")]]
    assert one["where"] == "one device"
    assert two["where"] == "MirroredStrategy over 2 devices"
    one, two = np.array(one["probs"]), np.array(two["probs"])
    assert np.abs(one - two).max() < 0.15
    assert np.array_equal(one > 0.5, two > 0.5)


@pytest.mark.slow
def test_jax_two_devices_and_two_processes_train_the_head_the_one_device_run_does():
    """Keras's DataParallel on JAX: two host devices in one process, then two processes on
    127.0.0.1 that each feed half of every batch (the one-image batch padded). Both end with
    the one-device run's predictions within 1e-5 (measured: equal to the printed digits)."""
    address = f"127.0.0.1:{free_port()}"
    runs = [start("jax", "none"),
            start("jax", "data_parallel", XLA_FLAGS="--xla_force_host_platform_device_count=2"),
            *(start("jax", "auto", KERAS_DISTRIBUTION_JOB_ADDRESSES=address,
                    KERAS_DISTRIBUTION_NUM_PROCESSES="2", KERAS_DISTRIBUTION_PROCESS_ID=str(i))
              for i in range(2))]
    one, two, first, second = [result(run) for run in runs]
    assert one["where"] == "one device" and two["where"] == "DataParallel over 2 devices"
    assert first["where"] == second["where"] == "DataParallel over 2 devices in 2 processes"
    assert (first["chief"], second["chief"]) == (True, False)
    for other in (two, first, second):
        assert np.allclose(other["probs"], one["probs"], rtol=0, atol=1e-5)


def test_auto_keeps_one_device_without_accelerators():
    with distributed("auto") as where:  # this machine has CPUs only
        assert where == "one device"


def test_an_unknown_distribution_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="distribution must be one of auto, none,"
                                            " data_parallel, got 'mirrored'"):
        load_params(params_with(tmp_path, {"distribution": "mirrored"}))
    assert load_params(params_with(tmp_path, {"distribution": "none"})).distribution == "none"


# The features pass over 5 images in batches of 4 (the last padded to split): VGG16 (random
# weights, 32 pixels) on the plain images and on an augmented view.
FEATURES = """
import json, sys
import keras
import numpy as np

from covidxray.model.augment import augmenter
from covidxray.model.features import build_features_model, feature_batches, feature_pass
from covidxray.model.devices import distributed
from covidxray.config.params import load_params
from covidxray.config.schema import Backbone

images = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3)).astype("uint8")
keras.utils.set_random_seed(0)
with distributed(sys.argv[1], across_processes=False) as where:
    extractor = build_features_model(Backbone(weights="none", precision="float32"), 32)
    augment = augmenter(load_params().augment)
    plain, view = (np.concatenate(list(feature_batches(feature_pass(extractor, a), images, 4)))
                   for a in (None, augment))
print(json.dumps({"where": where, "plain": plain.tolist(), "view": view.tolist()}))
"""


@pytest.mark.slow
def test_jax_two_devices_compute_the_features_one_device_does():
    runs = [start("jax", "none", script=FEATURES),
            start("jax", "data_parallel", script=FEATURES,
                  XLA_FLAGS="--xla_force_host_platform_device_count=2")]
    one, two = [result(run) for run in runs]
    assert (one["where"], two["where"]) == ("one device", "DataParallel over 2 devices")
    for name in ("plain", "view"):
        assert np.array(two[name]).shape == (5, 1, 1, 512)
        assert np.allclose(two[name], one[name], rtol=1e-5, atol=1e-5)


class Batches(keras.utils.PyDataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        return np.arange(10.0).reshape(5, 2), np.arange(5.0), np.array([1, 1, 2, 2, 2], "float32")


def test_each_process_feeds_an_equal_share_padded_with_rows_of_weight_zero():
    """5 rows over 4 devices in 2 processes: 8 rows, 4 a process; the real rows weigh 8/5 more,
    so the batch's mean loss is the one of the 5 rows."""
    shares = [EvenShare(Batches(), (index, 2, 4))[0] for index in range(2)]
    x, y, weights = (np.concatenate(part) for part in zip(*shares))
    assert [len(share[0]) for share in shares] == [4, 4]
    assert np.array_equal(x[:5], np.arange(10.0).reshape(5, 2)) and not x[5:].any()
    assert np.array_equal(y[:5], np.arange(5.0))
    assert np.allclose(weights, [1.6, 1.6, 3.2, 3.2, 3.2, 0, 0, 0])


@pytest.fixture
def processes(monkeypatch):
    """Sets KERAS_DISTRIBUTION_NUM_PROCESSES; process_share reads it afresh."""
    process_share.cache_clear()
    yield lambda value: monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", value)
    process_share.cache_clear()


@pytest.mark.parametrize("value, backend, message", [
    ("two", "tensorflow", "KERAS_DISTRIBUTION_NUM_PROCESSES must be a whole number of at least 1,"
                          " got 'two'"),
    ("0", "tensorflow", "KERAS_DISTRIBUTION_NUM_PROCESSES must be a whole number of at least 1,"
                        " got '0'"),
    ("-1", "jax", "KERAS_DISTRIBUTION_NUM_PROCESSES must be a whole number of at least 1,"
                  " got '-1'"),
    ("2", "tensorflow", "KERAS_DISTRIBUTION_NUM_PROCESSES=2: training in several processes"
                        " needs KERAS_BACKEND=jax, not tensorflow"),
    ("2", "jax", "KERAS_DISTRIBUTION_NUM_PROCESSES=2 needs KERAS_DISTRIBUTION_JOB_ADDRESSES too"
                 " (the first host's address:port)"),
])
def test_bad_process_settings_are_clear_errors(processes, monkeypatch, value, backend, message):
    """Checked before JAX is asked to join other processes: it would raise its own ValueError."""
    processes(value)
    monkeypatch.delenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", raising=False)
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    monkeypatch.setattr(keras.distribution, "initialize", lambda: pytest.fail("joined"))
    with pytest.raises(PipelineError, match=re.escape(message)):
        process_share()


def test_several_processes_need_each_ones_number(processes, monkeypatch):
    processes("2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "host0:1234")
    monkeypatch.delenv("KERAS_DISTRIBUTION_PROCESS_ID", raising=False)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(PipelineError, match=r"needs KERAS_DISTRIBUTION_PROCESS_ID too \(this"
                                            r" process's number, 0 to 1\)"):
        process_share()


def test_distribution_none_with_several_processes_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(devices, "process_share", lambda: (0, 2))
    with pytest.raises(PipelineError, match="distribution is none but"
                                            " KERAS_DISTRIBUTION_NUM_PROCESSES=2: set it to auto"
                                            " or data_parallel, or start one process"):
        with distributed("none"):
            pass
