"""The linear head fitted in one go: L-BFGS on the loss that Keras's fit would descend.

A linear head on stored features is a small convex problem: the weighted cross-entropy of the
logits plus `head.l2` times the squared kernel, on the pooled and standardised features. Fitting
it with scikit-learn's LogisticRegression (L-BFGS) costs a fraction of a second where Keras's
fit spent about 9 s a head on building, compiling and epochs of small batches; so `repeat` and
`holdout` can train many heads. It differs from Keras's fit in two ways, both chosen on
validation (docs/model-selection.md): no dropout (noise for a stochastic fit, not part of the
optimum) and no best epoch (the optimum needs no early stop). The result goes into the Keras
head's logits layer, so the saved classifier is the same model as before.
"""

import warnings

import keras
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from covidxray.errors import PipelineError
from covidxray.model.batching import batch_slices
from covidxray.model.inputs import sample_weights, targets, training_views

MAX_ITERATIONS = 2000
TOLERANCE = 1e-6  # of the projected gradient, as scipy's L-BFGS-B measures it


def dense_inputs(head, view, rows, batch_size=256):
    """What the head's logits layer reads for `rows` of one view (array or Shards): the pooled,
    standardised features, in float64, a batch of rows read at a time."""
    front = [layer for layer in head.layers
             if not isinstance(layer, (keras.layers.Dense, keras.layers.Dropout))]
    parts = []
    for batch in batch_slices(len(rows), batch_size):
        x = view[rows[batch]].astype(np.float32)
        for layer in front:
            x = layer(x)
        parts.append(keras.ops.convert_to_numpy(x).astype(np.float64))
    return np.concatenate(parts)


def row_space(x):
    """An orthonormal basis (features x rank) of the span of x's rows. The L2 optimum's kernel
    lies in it (any part outside changes no training logit and adds to the penalty), so the
    fit in its coordinates, rank <= rows numbers instead of thousands, is the same optimum.
    From the rows' Gram matrix, a tenth of the time of an SVD or QR of x; directions whose
    singular value is under 1e-6 of the largest are left out."""
    energy, rows = np.linalg.eigh(x @ x.T)
    kept = energy > energy[-1] * 1e-12
    return (x.T @ rows[:, kept]) / np.sqrt(energy[kept])


def regularisation(l2, rows):
    """LogisticRegression's C for Keras's loss: mean(weight * cross-entropy) + l2 * |kernel|^2
    is C * sum(...) + |kernel|^2 / 2 divided by C * rows, so C = 1 / (2 * rows * l2)."""
    return 1.0 / (2.0 * rows * l2) if l2 else np.inf


def solve_head(head, features, train, val, recipe, callbacks=()):
    """Fit the (linear, standardised already: adapt_head) head's logits layer on the bank's
    training views of `train`'s rows; each view of an image is a row, as each is an epoch's
    sample in Keras's fit. The train and validation loss and accuracy go to `callbacks` (as
    one epoch's logs). Returns the iterations L-BFGS took, as {"lbfgs": n}."""
    task, hp = recipe.task, recipe.head
    n_classes, rows = len(task.classes), train["image"].to_numpy()
    views = training_views(features, recipe.features.plain_view)
    x = np.concatenate([dense_inputs(head, view, rows) for view in views])
    y = np.tile(targets(train, n_classes).astype(int), len(views))
    weights = sample_weights(train, n_classes, hp.class_weight)
    weights = np.tile(np.ones(len(rows)) if weights is None else weights, len(views))
    missing = sorted(set(range(n_classes)) - set(y))
    if missing:
        raise PipelineError(f"task {task.name}: no training image of class(es)"
                            f" {[task.classes[i] for i in missing]}, so no head can be fitted")
    basis = row_space(x)
    coordinates = x @ basis
    fitted = LogisticRegression(C=regularisation(hp.l2, len(x)), tol=TOLERANCE,
                                max_iter=MAX_ITERATIONS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        fitted.fit(coordinates, y, sample_weight=weights)
    iterations = int(fitted.n_iter_.max())
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        print(f"solver {task.name}: L-BFGS stopped at {MAX_ITERATIONS} iterations before its"
              f" tolerance {TOLERANCE}; the head is the last iterate")
    head.get_layer("logits").set_weights([(basis @ fitted.coef_.T).astype(np.float32),
                                          fitted.intercept_.astype(np.float32)])
    val_x = dense_inputs(head, features["plain"], val["image"].to_numpy()) @ basis
    logs = {**scores(fitted, coordinates, y, weights, hp.l2),
            **{f"val_{k}": v for k, v in scores(
                fitted, val_x, targets(val, n_classes).astype(int)).items()}}
    for callback in callbacks:
        callback.on_epoch_end(0, logs)
    return {"lbfgs": iterations}


def scores(fitted, x, y, weights=None, l2=0.0):
    """Loss and accuracy as Keras's fit reports them: the weighted mean cross-entropy plus, for
    training, the L2 term; accuracy unweighted."""
    probs = fitted.predict_proba(x)
    loss = log_loss(y, probs, sample_weight=weights, labels=fitted.classes_)
    if weights is not None:  # log_loss divides by the weights' sum, Keras by the rows
        loss *= weights.sum() / len(weights)
    return {"accuracy": float(np.mean(fitted.classes_[probs.argmax(1)] == y)),
            "loss": float(loss + l2 * np.sum(fitted.coef_**2))}
