from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from covidxray.evaluation.scoring import predictions_table, scores

CLASSES = ["normal", "bacterial", "covid"]


def test_scores_of_a_three_class_prediction():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .8, .1], [.1, .6, .3], [.1, .2, .7],
                      [.3, .3, .4]])
    result = scores(labels, probs, CLASSES)
    assert result["n"] == 6 and result["correct"] == 5
    assert result["accuracy"] == pytest.approx(5 / 6)
    low, high = result["accuracy_ci95"]
    assert low < 5 / 6 < high and high <= 1 and low == pytest.approx(0.436, abs=1e-3)  # Wilson
    assert result["per_class"]["normal"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3,
                                             "support": 2}
    assert result["per_class"]["bacterial"]["precision"] == pytest.approx(2 / 3)
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 2]]
    assert result["auc"] == pytest.approx((7 / 8 + 7 / 8 + 1) / 3)  # macro one-vs-rest
    assert result["loss"] == pytest.approx(-np.mean(np.log([.8, .2, .8, .6, .7, .4])))


def test_binary_auc_uses_the_positive_class_probability():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[.9, .1], [.4, .6], [.7, .3], [.2, .8]])
    result = scores(labels, probs, ["normal", "covid"])
    assert result["auc"] == 0.75
    assert result["accuracy"] == 0.5


def test_auc_is_null_when_a_class_is_absent_from_the_labels():
    result = scores(np.array([0, 0]), np.array([[.6, .3, .1], [.2, .5, .3]]), CLASSES)
    assert result["auc"] is None
    assert result["per_class"]["covid"]["support"] == 0


def test_predictions_table_has_one_probability_column_per_class():
    rows = pd.DataFrame({"path": ["a.png", "b.png"], "class": ["covid", "normal"]})
    table = predictions_table(rows, np.array([[.1, .2, .7], [.5, .4, .1]]), CLASSES)
    assert list(table.columns) == ["path", "actual", "predicted", "p_normal", "p_bacterial",
                                   "p_covid"]
    assert table["predicted"].tolist() == ["covid", "normal"]


def test_a_frozen_model_is_scored_from_the_stored_features_as_on_its_images(sources):
    """evaluate reads the features stage's features (no VGG16 pass) and gets what the saved
    classifier gives on the decoded images; a fine-tuned one is scored on the images."""
    from covidxray.data.external import external_features
    from covidxray.data.provenance import read_arrays
    from covidxray.model.classifier import load_classifier, probabilities
    from covidxray.paths import EXTERNAL, EXTERNAL_FEATURES, MODELS
    from stages import evaluate, external, features, merge, prepare, split, train
    from tests.conftest import TINY, write_image, write_params

    for i in range(5):  # a set of images no other set or the manifest holds
        write_image(Path(f"data/raw/extra/{('covid', 'normal')[i % 2]}/x{i}.png"), 500 + i)
    write_params(**TINY, external={"extra": {"layout": "folders", "path": "data/raw/extra",
                                             "findings": {"covid": "covid", "normal": "normal"},
                                             "age_group": "adult"}})
    for stage in (merge, prepare, split, external, features):
        stage.main()
    train.main("binary")
    evaluate.main("binary")
    classifier = load_classifier(MODELS / "binary.keras")
    names = sorted(path.stem for path in EXTERNAL_FEATURES.glob("*.npz"))
    assert names and names == sorted(path.stem for path in EXTERNAL.glob("*.npz"))
    scored_sets = []
    for name in names:
        images = read_arrays(EXTERNAL / f"{name}.npz", "external")["images"]
        assert len(external_features(name)) == len(images)
        if not len(images):
            continue
        scored_sets.append(name)
        scored = pd.read_csv(f"metrics/detail/external/binary/{name}.csv")
        on_images = probabilities(classifier, images, 8)
        np.testing.assert_allclose(scored["p_covid"], on_images[:, 1], atol=1e-5)
    # a set whose features are missing is named with the stage that writes them
    assert scored_sets
    (EXTERNAL_FEATURES / f"{scored_sets[0]}.npz").unlink()
    with pytest.raises(Exception, match=rf"{scored_sets[0]}\.npz: cannot read .*repro features"):
        evaluate.main("binary")
