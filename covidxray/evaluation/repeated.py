"""Each task over repeated splits: its head trained on each seed's split as train does, beside the
logistic-regression reference on the same features, both scored on validation and test. The
bank holds every image's views, so a new split costs no VGG16 pass."""


import numpy as np

from covidxray.data.splitting import draw_splits, task_rows
from covidxray.evaluation.scoring import by_source, mean_pooled, reference_model, scores, val_scores
from covidxray.model.backbone import trainable_top
from covidxray.model.batching import batch_slices
from covidxray.model.classifier import model_outputs
from covidxray.model.training import bank_probabilities, head_on_bank


def split_scores(predict, parts, task, seed):
    """Validation and test scores of a model (rows -> class probabilities) on one split of a
    task."""
    classes = task.classes
    val, test = (task_rows(parts[name], task, f"split seed {seed}, {name}")
                 for name in ("val", "test"))
    val_probs, test_probs = predict(val), predict(test)
    # per source on validation too: mitigations of the source shortcut are chosen there
    return {"val": {**val_scores(val["label"].to_numpy(), val_probs, classes),
                    "by_source": by_source(val, val_probs, classes)},
            "test": {**scores(test["label"].to_numpy(), test_probs, classes),
                     "by_source": by_source(test, test_probs, classes)}}


def head_scores(bank, parts, recipe, seed, top):
    """Train one task's head on one split's training images, as train does; its scores."""
    train, val = (task_rows(parts[name], recipe.task, f"split seed {seed}, {name}")
                  for name in ("train", "val"))
    model = head_on_bank(bank, train, val, recipe, seed, top)
    return split_scores(lambda rows: bank_probabilities(model, bank["plain"], rows, recipe),
                        parts, recipe.task, seed)


def reference_scores(plain, parts, task, seed):
    """The logistic-regression reference, trained on one split's (pooled) plain features; its
    scores."""
    train = task_rows(parts["train"], task, f"split seed {seed}, train")
    model = reference_model(plain[train["image"].to_numpy()], train["label"].to_numpy())
    return split_scores(lambda rows: model.predict_proba(plain[rows["image"].to_numpy()]),
                        parts, task, seed)


def top_and_mean_pooled(params, bank):
    """The trainable top blocks (None when frozen) and every image's average-pooled block5
    features of the plain view, which the reference model reads: 2 KiB an image, made a shard's
    rows at a time."""
    top = trainable_top(params.backbone, params.image_size)
    plain, batch = bank["plain"], params.shard_size
    chunks = (plain[rows].astype(np.float32) for rows in batch_slices(len(plain), batch))
    return top, np.concatenate([mean_pooled(chunk if top is None
                                            else model_outputs(top, chunk, batch))
                                for chunk in chunks])


def run_splits(params, recipes, manifest, bank, seeds):
    """Each task's head and reference scores on each seed's split: {task: {model: [scores]}}."""
    top, plain = top_and_mean_pooled(params, bank)
    start = top.get_weights() if top is not None else None
    runs = {task: {"head": [], "reference": []} for task in recipes}
    drawn = draw_splits(manifest, params.split, seeds)
    for i, (seed, parts) in enumerate(zip(seeds, drawn), start=1):
        for task, recipe in recipes.items():
            if top is not None:
                top.set_weights(start)  # every split fine-tunes from the same weights
            runs[task]["head"].append(head_scores(bank, parts, recipe, seed, top))
            runs[task]["reference"].append(
                reference_scores(plain, parts, recipe.task, seed))
        line = ", ".join(f"{task} {r['head'][-1]['val']['accuracy']:.2f}"
                         f" (reference {r['reference'][-1]['val']['accuracy']:.2f})"
                         for task, r in runs.items())
        print(f"repeat: split {i}/{len(seeds)} (seed {seed}): val accuracy {line}")
    return runs
