"""The linear head fitted by L-BFGS (covidxray/model/solver.py): the optimum of Keras's own loss."""

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from covidxray.errors import PipelineError
from covidxray.model import head as heads, inputs, solver, training
from tests.conftest import make_recipe, make_task
from tests.test_head import params

L2 = 0.01


def problem(n_classes, rows=48, features=(2, 2, 40), seed=0):
    """Feature maps with more features than rows (as VGG16's 8,192 against ~400 images), labels
    that depend on a few features, rows split 3:1 into train and validation."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, *features)).astype(np.float32)
    scores = x.reshape(rows, -1)[:, :n_classes] + 0.5 * rng.normal(size=(rows, n_classes))
    labels = scores.argmax(1) if n_classes > 2 else (scores[:, 0] > scores[:, 1]).astype(int)
    table = pd.DataFrame({"image": np.arange(rows), "label": labels,
                          "source": np.where(np.arange(rows) % 3, "a", "b")})
    return x, table.iloc[:36], table.iloc[36:]


def solved(x, train, val, n_classes, callbacks=(), **head):
    classes = ("normal", "covid") if n_classes == 2 else ("normal", "bacterial", "covid")
    task = make_task(classes, epochs=5, normalize=True, l2=L2, class_weight="balanced",
                     solver="lbfgs", **head)
    recipe = make_recipe(task)
    model = heads.build_head(n_classes, x.shape[1:], **task.head.layers())
    model, kept = training.fit_on_bank(model, {"bank": [], "plain": x}, train, val, recipe,
                                       callbacks=callbacks)
    return model, kept, recipe


@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_head_is_the_optimum_over_every_feature_not_only_the_rows_span(n_classes):
    """The fit in the training rows' span gives the same head as scikit-learn's fit over all
    2x2x40 = 160 standardised features (with C for Keras's L2), on rows it never saw too."""
    x, train, val = problem(n_classes)
    model, kept, recipe = solved(x, train, val, n_classes)
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean, std = flat[train.image].mean(0), flat[train.image].std(0)
    weights = inputs.sample_weights(train, n_classes, "balanced")
    full = LogisticRegression(C=1 / (2 * len(train) * L2), tol=1e-8, max_iter=5000).fit(
        (flat[train.image] - mean) / std, train.label, sample_weight=weights)
    expected = full.predict_proba((flat - mean) / std)
    got = training.bank_probabilities(model, x, pd.DataFrame({"image": np.arange(len(x))}),
                                      recipe)
    assert np.abs(got - expected).max() < 2e-3
    assert kept["lbfgs"] > 1


def test_no_small_step_lowers_keras_own_loss_from_the_solvers_head():
    """Keras's loss as fit computes it (weighted cross-entropy of the logits plus the L2 of the
    kernel) is lowest at the solved kernel: each random small step raises it."""
    x, train, val = problem(3)
    model, _, _ = solved(x, train, val, 3)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rows = train.image.to_numpy()
    weights = inputs.sample_weights(train, 3, "balanced")

    def loss():
        return model.evaluate(x[rows], train.label.to_numpy(), sample_weight=weights,
                              batch_size=len(rows), verbose=0)

    best, logits = loss(), model.get_layer("logits")
    kernel, bias = logits.get_weights()
    rng = np.random.default_rng(1)
    for _ in range(4):
        step = rng.normal(size=kernel.shape).astype(np.float32)
        logits.set_weights([kernel + 0.02 * step / np.linalg.norm(step), bias])
        assert loss() > best
    logits.set_weights([kernel, bias])
    assert loss() == pytest.approx(best, rel=1e-6)


def test_training_logs_get_the_fits_loss_and_accuracy_as_one_epoch():
    x, train, val = problem(2)
    logged = []

    class Logs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logged.append((epoch, logs))

    model, _, recipe = solved(x, train, val, 2, callbacks=[Logs()])
    [(epoch, logs)] = logged
    assert epoch == 0 and set(logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    probs = training.bank_probabilities(model, x, val, recipe)
    assert logs["val_accuracy"] == pytest.approx(np.mean(probs.argmax(1) == val.label))
    assert logs["loss"] > 0 and 0 <= logs["accuracy"] <= 1


def test_a_training_split_without_a_class_is_named():
    x, train, val = problem(3)
    with pytest.raises(PipelineError, match=r"task t: no training image of class\(es\) \['cov"):
        solved(x, train[train.label < 2], val, 3)


def test_auto_fits_the_linear_head_by_lbfgs_and_anything_else_by_epochs(tmp_path):
    assert params(tmp_path).recipe("binary").solver == "lbfgs"
    hidden = params(tmp_path, head__units=16).recipe("binary")
    assert hidden.solver == "adam"
    tuned = params(tmp_path, backbone__trainable_blocks=1).recipe("binary")
    assert tuned.solver == "adam"
    assert params(tmp_path, head__solver="adam").recipe("binary").solver == "adam"


@pytest.mark.parametrize("change, why", [
    ({"head__units": 16}, r"head.units > 0"),
    ({"backbone__trainable_blocks": 1}, r"backbone.trainable_blocks > 0"),
    ({"features__plain_view": False}, r"no bank"),
])
def test_lbfgs_where_it_cannot_fit_is_refused_with_the_reason(tmp_path, change, why):
    with pytest.raises(PipelineError, match=r"^params.yaml: head.solver lbfgs \(task binary\)"
                       rf" fits a linear head on the bank, not with {why}"):
        params(tmp_path, head__solver="lbfgs", **change)


def test_a_bad_solver_is_named(tmp_path):
    with pytest.raises(PipelineError, match="^params.yaml: head.solver must be one of auto,"
                       " lbfgs, adam, got 'sgd'"):
        params(tmp_path, head__solver="sgd")


def test_the_row_space_basis_is_orthonormal_and_holds_every_row():
    x = np.random.default_rng(2).normal(size=(30, 300))
    basis = solver.row_space(x)
    assert basis.shape == (300, 30)
    assert np.allclose(basis.T @ basis, np.eye(30), atol=1e-8)
    assert np.allclose(x @ basis @ basis.T, x, atol=1e-8)
