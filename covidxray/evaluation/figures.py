"""The pipeline's figures, drawn from numbers the stages read: confusion matrices, ROC curves,
image galleries, the leave-one-place-out curve by regions and the ood check's distances. Each
PNG is written whole or not at all."""

import math

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from covidxray.files import replacing  # noqa: E402


def confusion(ax, matrix, classes, title):
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in pd.DataFrame(matrix).stack().items():
        ax.text(j, i, count, ha="center", va="center",
                color="white" if count > max(map(max, matrix)) / 2 else "black")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes,
           yticklabels=classes, xlabel="predicted", ylabel="true", title=title)
    ax.tick_params(axis="x", labelrotation=30)  # pneumonia_other beside its neighbours


def roc(ax, predictions, classes, title):
    """One-vs-rest ROC curve of each class that has both positives and negatives."""
    for cls in classes:
        truth = predictions["actual"] == cls
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = roc_curve(truth, predictions[f"p_{cls}"])
        ax.plot(fpr, tpr, label=cls)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")


def gallery(predictions, images, path):
    """Every test image, titled with the predicted class and its probability; red when wrong."""
    cols = min(9, len(predictions))
    rows = math.ceil(len(predictions) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, row in zip(axes.flat, images, predictions.itertuples()):
        ax.imshow(image)
        wrong = row.predicted != row.actual
        p = getattr(row, f"p_{row.predicted}")
        ax.set_title(f"{row.predicted} {p:.2f}\n(true {row.actual})",
                     fontsize=7, color="red" if wrong else "black")
    save(fig, path)


def save(fig, path):
    fig.tight_layout()
    with replacing(path) as partial:
        fig.savefig(partial, dpi=100)
    plt.close(fig)


def region_curve(ax, points, holdout, targets):
    """Recall on a left-out region of holdout's region collection, by regions trained on."""
    ax.plot(points["regions"], points["recall"], marker="o", label="recall on the left-out region")
    ax.plot(points["regions"], points["false_alarm"], marker="s", label="false alarms")
    for x, sites, images in zip(points["regions"], points["train_sites"], points["train_covid"]):
        ax.annotate(f"{sites:.0f} sites\n{images:.0f} img", (x, 0.02), ha="center", fontsize=7)
    ax.axhline(targets["recall"], linestyle=":", color="grey", label="recall target")
    ax.set(title=f"by regions of {holdout['region_source']} trained on",
           xlabel="other regions in training (the other collections always)", ylabel="share",
           ylim=(0, 1))
    ax.legend(fontsize=8)


def ood_distances(distances, threshold, path):
    """Each set's distances as points on its own row, the threshold as a line."""
    names = list(distances)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.2))
    jitter = np.random.default_rng(0)
    for row, name in enumerate(names):
        d = distances[name]
        ax.scatter(d, row + jitter.uniform(-0.25, 0.25, len(d)), s=8, alpha=0.6)
    ax.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set(yticks=range(len(names)), yticklabels=names, xlabel="cosine distance to the k-th"
           " nearest training X-ray", title="Not a frontal chest X-ray? (flagged right of the"
           " line)")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    save(fig, path)
