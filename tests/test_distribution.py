"""Keras's data-parallel training (covidxray/distribution.py) against one device."""

import json
import subprocess
import sys

import numpy as np
import pytest

from covidxray.common import PipelineError
from covidxray.distribution import distributed, distribution_param
from tests.conftest import ROOT

# Trains a head with fit_on_bank (the bank's PyDataset batches, balanced weights, Normalization
# adapted in the scope) and prints where it trained and the weights it ended with.
TRAIN = """
import json, sys
import numpy as np
import pandas as pd
import tensorflow as tf

setting, logical_cpus = sys.argv[1], int(sys.argv[2])
cpu = tf.config.list_physical_devices("CPU")[0]  # before TensorFlow starts its runtime
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()]
                                           * logical_cpus)
from covidxray import model, training
from covidxray.distribution import distributed

rng = np.random.default_rng(0)
plain = rng.normal(size=(40, 2, 2, 8)).astype("float32")
rows = pd.DataFrame({"image": range(40), "label": (plain[:, 0, 0, 0] > 0).astype(int),
                     "source": "kermany"})
recipe = {"task": {"classes": ["normal", "covid"], "lr": 0.01, "epochs": 3, "batch_size": 10},
          "head": {"class_weight": "balanced", "restore_best": False, "variance_floor": 0.0},
          "plain_view": True, "seed": 0, "shard_size": 1024}
with distributed(setting) as where:
    training.seed_everything(0)
    head = model.build_head(2, (2, 2, 8), normalize=True, units=0, dropout=0.0, l2=0.01)
    bank = {"bank": np.empty((0, 40, 2, 2, 8), "float32"), "plain": plain}
    training.fit_on_bank(head, bank, rows, rows, recipe, verbose=0)
    probs = model.head_probabilities(head, plain, 10)[:, 1]
print(json.dumps({"where": where, "probs": probs.tolist()}))
"""


def train(setting, logical_cpus):
    done = subprocess.run([sys.executable, "-c", TRAIN, setting, str(logical_cpus)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_two_cpu_devices_train_a_head_that_predicts_as_the_one_device_head_does():
    """MirroredStrategy splits each batch of 10 in two and sums the gradients. With arrays as
    input the weights match to float rounding; with the bank's PyDataset they drift apart (up
    to 0.05 in probability on this data, cause not pinned down), hence the stated tolerance."""
    one, two = train("none", 2), train("data_parallel", 2)
    assert one["where"] == "one device"
    assert two["where"] == "MirroredStrategy over 2 devices"
    one, two = np.array(one["probs"]), np.array(two["probs"])
    assert np.abs(one - two).max() < 0.1
    assert np.array_equal(one > 0.5, two > 0.5)


def test_auto_keeps_one_device_without_accelerators():
    with distributed("auto") as where:  # this machine has CPUs only
        assert where == "one device"


def test_an_unknown_distribution_is_a_clear_error():
    with pytest.raises(PipelineError, match="distribution must be one of auto, none,"
                                            " data_parallel, got 'mirrored'"):
        distribution_param({"distribution": "mirrored"})
