import keras
import numpy as np

from covidxray.model.head import build_head
from covidxray.model.inputs import BankBatches, shuffled_batches
from covidxray.model.training import fit
from tests.conftest import make_task


def bank(views=3, n=7):
    """bank[v, i] = (v, i), so a batch tells which view of which image it holds."""
    v, i = np.meshgrid(np.arange(views), np.arange(n), indexing="ij")
    return np.stack([v, i], axis=-1).astype("float32")


def epochs_of(batches, epochs):
    seen = []
    for _ in range(epochs):
        x, y = zip(*(batches[k] for k in range(len(batches))))
        seen.append((np.concatenate(x), np.concatenate(y)))
        batches.on_epoch_begin()
    return seen


def test_each_epoch_shows_every_image_once_and_cycles_through_its_views():
    batches = BankBatches(bank(), np.arange(7), np.arange(7) * 10, batch_size=3, seed=1)
    assert len(batches) == 3
    seen = epochs_of(batches, 3)
    for x, y in seen:
        assert sorted(x[:, 1]) == list(range(7))  # every image once
        np.testing.assert_array_equal(y, x[:, 1] * 10)  # labels travel with their images
    views = {}
    for x, _ in seen:
        for view, image in x:
            views.setdefault(image, []).append(view)
    assert all(sorted(v) == [0, 1, 2] for v in views.values())  # 3 epochs: each view once


def test_batches_depend_only_on_the_seed():
    first = epochs_of(BankBatches(bank(), np.arange(7), np.arange(7), 3, seed=1), 2)
    again = epochs_of(BankBatches(bank(), np.arange(7), np.arange(7), 3, seed=1), 2)
    other = epochs_of(BankBatches(bank(), np.arange(7), np.arange(7), 3, seed=2), 2)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    assert not np.array_equal(first[0][0], first[1][0])  # reshuffled between epochs


def test_keras_fit_moves_the_bank_on_every_epoch():
    batches = BankBatches(np.random.default_rng(0).normal(size=(2, 8, 4)).astype("float32"),
                          np.arange(8), np.arange(8) % 2, batch_size=4, seed=0)
    fit(build_head(2, (4,)), {"x": batches}, make_task(lr=1e-3, epochs=3, batch_size=4),
        verbose=0)
    assert batches.epoch >= 2  # on_epoch_begin ran for each epoch


def test_per_epoch_images_on_jax_come_as_the_banks_batches_with_their_weights(monkeypatch):
    """Not tf.data: a PyDataset, so a JAX distribution can split it (training.EvenShare)."""
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    images = np.arange(7, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    batches = shuffled_batches(images, np.arange(7) * 10, 3, seed=1, weights=np.arange(7.0))["x"]
    x, y, weights = (np.concatenate(part) for part in zip(*(batches[k] for k in range(3))))
    assert sorted(x[:, 0, 0, 0]) == list(range(7))  # every image once, whole
    np.testing.assert_array_equal(y, x[:, 0, 0, 0] * 10)
    np.testing.assert_array_equal(weights, x[:, 0, 0, 0])
