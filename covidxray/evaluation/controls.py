"""Shortcut controls: images with the lung field hidden or alone, a linear probe's scores on
them, and how much of a Grad-CAM heatmap falls on the lung field.

The lung field is approximated by the central box left when `margin` (a share of the width and
of the height) is cut from every side: the lungs fill the middle of a frontal chest X-ray, while
borders, text, markers and the shoulders (what tells hospitals and ages apart) lie outside.
"""

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from covidxray.evaluation.scoring import by_source, reference_model, scores


def lung_box(size, margin):
    """(top, bottom, left, right) pixel bounds of the central field of a size x size image."""
    cut = int(round(size * margin))
    return cut, size - cut, cut, size - cut


def hide_lungs(images, margin):
    """The images with the lung field black (Maguolo & Nanni 2021): what is left is outside it."""
    top, bottom, left, right = lung_box(images.shape[1], margin)
    hidden = images.copy()
    hidden[:, top:bottom, left:right] = 0
    return hidden


def lungs_only(images, margin):
    """The lung field of each image, cropped and resized back: no borders, text or markers."""
    size = images.shape[1]
    top, bottom, left, right = lung_box(size, margin)
    return np.stack([np.asarray(Image.fromarray(image[top:bottom, left:right]).resize(
        (size, size), Image.Resampling.BILINEAR)) for image in images])


def probe_scores(train_features, train, test_features, test, classes):
    """The reference model trained on the training rows' features, scored on the test rows':
    accuracy, COVID-19 recall and the adult false-alarm rate (by_source)."""
    model = reference_model(train_features, train["label"].to_numpy())
    probs = model.predict_proba(test_features)
    tested = scores(test["label"].to_numpy(), probs, classes)
    return {"n": tested["n"], "accuracy": tested["accuracy"],
            "covid_recall": tested["per_class"]["covid"]["recall"] if "covid" in classes
            else None,
            "adult_false_alarm": by_source(test, probs, classes)["adult_false_alarm"]}


def linear_probe(features, positive, patients, folds, seed):
    """Out-of-fold AUC and balanced accuracy of a linear probe telling the `positive` rows
    (bool) from the others, with whole patients per fold: can the features tell them apart?"""
    groups = pd.Series(patients)
    folds = min(folds, *(groups[positive == side].nunique() for side in (True, False)))
    if folds < 2:
        return {"n": len(positive), "folds": folds, "auc": None, "balanced_accuracy": None}
    probe = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced",
                                                               max_iter=2000))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    p = cross_val_predict(probe, features.reshape(len(features), -1), positive, groups=patients,
                          cv=cv, method="predict_proba")[:, 1]
    return {"n": len(positive), "n_positive": int(positive.sum()), "folds": folds,
            "auc": float(roc_auc_score(positive, p)),
            "balanced_accuracy": float(balanced_accuracy_score(positive, p > 0.5))}


def lung_mass(heatmaps, size, margin):
    """Per heatmap, the share of its mass inside the lung field, at the image's size."""
    top, bottom, left, right = lung_box(size, margin)
    shares = []
    for heatmap in heatmaps:
        full = np.asarray(Image.fromarray(heatmap).resize((size, size),
                                                          Image.Resampling.BILINEAR))
        total = full.sum()
        shares.append(float(full[top:bottom, left:right].sum() / total) if total > 0 else None)
    return shares


def findings(result):
    probes = result["probe"]
    lines = [f"{name}: the reference model gets {p['accuracy']:.2f} of {p['n']} test images right"
             + (f", finds {p['covid_recall']:.2f} of COVID-19" if p["covid_recall"] is not None
                else "")
             + (f" and calls {p['adult_false_alarm']:.2f} of adults without it COVID-19"
                if p["adult_false_alarm"] is not None else "") + "."
             for name, p in probes.items()]
    age = result["age_probe"]
    if age and age["auc"] is not None:
        lines.append(f"Age probe: a linear probe tells children from adults of {age['source']}"
                     f" (one hospital) with AUC {age['auc']:.2f}.")
    lines.append(f"Grad-CAM: {result['gradcam_lung_share']['all']:.2f} of the heatmaps' mass lies"
                 " in the lung field, which is"
                 f" {(1 - 2 * result['margin']) ** 2:.2f} of the image.")
    return lines
