"""controls: where in the image, and from which shortcut, can COVID-19 be read?

On `controls.task`'s split, the reference model (logistic regression on standardised,
average-pooled frozen VGG16 features; covidxray/evaluation/scoring.py) is trained on the
training images and scored on the test images three times:
- full: the images as they are;
- lungs_hidden: the central lung field blacked out in training and test (Maguolo & Nanni 2021);
  what it still gets right it reads from outside the lungs;
- lungs_only: the lung field cropped and resized: no borders, text or markers.
Then:
- age probe: a linear probe, whole patients per fold, telling the children of the external set
  `controls.children` from the manifest's adults of the same source (NIH);
- Grad-CAM: the share of the task's trained model's heatmap inside the lung field, per class,
  source and age group of the test images.

Writes metrics/detail/controls.json, with the findings in plain words under `summary`.
"""

import numpy as np
import pandas as pd

from covidxray.config.params import load_params
from covidxray.data.external import external_features, external_rows
from covidxray.data.provenance import trained_record
from covidxray.data.shards import prepared_images, read_features
from covidxray.data.splitting import read_split
from covidxray.errors import PipelineError
from covidxray.evaluation.controls import (findings, hide_lungs, linear_probe, lung_mass,
                                           lungs_only, probe_scores)
from covidxray.evaluation.gradcam import gradcam
from covidxray.files import write_json
from covidxray.model.classifier import load_classifier, probabilities
from covidxray.model.features import bank_batch, build_features_model, plain_features
from covidxray.model.training import seed_everything
from covidxray.paths import DETAIL, MANIFEST, MODELS
from covidxray.runner import cli


def image_probes(extractor, plain, batch, task, margin, train, test):
    """The reference model's test scores on the full images (the bank's plain features), and
    with the lungs hidden or alone, whose features `extractor` computes here."""
    images = {name: prepared_images(rows) for name, rows in (("train", train), ("test", test))}
    result = {"full": probe_scores(plain[train["image"].to_numpy()], train,
                                   plain[test["image"].to_numpy()], test, task.classes)}
    for name, alter in (("lungs_hidden", hide_lungs), ("lungs_only", lungs_only)):
        train_features, test_features = (plain_features(extractor, alter(images[part], margin),
                                                        batch) for part in ("train", "test"))
        result[name] = probe_scores(train_features, train, test_features, test, task.classes)
    return result


def children_rows(name):
    """The rows of the external set `name`, checked to be children of one source."""
    rows = external_rows(name)
    if not len(rows) or rows["source"].nunique() != 1 or (rows["age_group"] != "child").any():
        raise PipelineError(f"params.yaml: controls.children set {name!r} must hold children of"
                            f" one source; it holds {len(rows)} image(s) of age groups"
                            f" {sorted(set(rows['age_group']))} from {sorted(set(rows['source']))}")
    return rows


def age_probe(plain, children, rows, folds, seed):
    """Children (`rows` of external set `children`) against the manifest's adults of their
    source."""
    source = rows["source"].iloc[0]
    manifest = pd.read_csv(MANIFEST)
    adults = manifest[(manifest["source"] == source) & (manifest["age_group"] == "adult")]
    child_features = external_features(children)
    return {"source": source, **linear_probe(
        np.concatenate([child_features, plain[adults.index.to_numpy()]]),
        np.r_[np.ones(len(rows), bool), np.zeros(len(adults), bool)],
        np.r_[rows["patient"].to_numpy(), adults["patient"].to_numpy()], folds, seed)}


def lung_shares(task, test, margin):
    """Mean share of the Grad-CAM mass inside the lung field, overall and per test group."""
    trained_record(task.name)
    model = load_classifier(MODELS / f"{task.name}.keras")
    images = prepared_images(test)
    predicted = probabilities(model, images, task.batch_size).argmax(axis=1)
    shares = pd.Series(lung_mass(gradcam(model, images, predicted), images.shape[1], margin),
                       index=test.index, dtype=float)
    groups = test["class"] + "/" + test["source"] + "/" + test["age_group"]
    return {"all": float(shares.mean()),
            "groups": {g: float(v) for g, v in shares.groupby(groups).mean().items()}}




def main():
    params = load_params()
    seed_everything(params.seed)  # backbone.weights `none` draws its weights
    spec = params.controls
    task, margin = params.task(spec.task), spec.margin
    children = children_rows(spec.children) if spec.children else None
    train, test = read_split("train", task), read_split("test", task)
    # what the bank's plain view holds (block4_pool when VGG16's block5 is fine-tuned)
    extractor = build_features_model(params.backbone, params.image_size)
    plain = read_features()["plain"]
    batch = bank_batch(params.features, params.backbone, extractor)
    result = {"task": task.name, "margin": margin,
              "probe": image_probes(extractor, plain, batch, task, margin, train, test),
              "age_probe": age_probe(plain, spec.children, children, spec.folds, params.seed)
              if children is not None else None,
              "gradcam_lung_share": lung_shares(task, test, margin)}
    result["summary"] = findings(result)
    write_json(DETAIL / "controls.json", result)
    for line in result["summary"]:
        print(f"controls: {line}")


if __name__ == "__main__":
    cli(main)()
