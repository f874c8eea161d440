"""The head's params, its layers, best-epoch restore, class weights and fine-tuning."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from covidxray.config.params import load_params
from covidxray.config.schema import Augment
from covidxray.errors import PipelineError
from covidxray.evaluation.scoring import reference_model
from covidxray.model import backbone as vgg, head as heads, inputs, training
from covidxray.model.classifier import build_classifier, head_probabilities, load_classifier
from tests.conftest import ROOT, make_recipe, make_task, params_with

SIZE = 32  # pixels: VGG16's smallest input, fast on a CPU


def params(folder, **changes):
    """load_params of the repo's params.yaml with `changes`, keys as section__name."""
    return load_params(params_with(folder, {key.replace("__", "."): value
                                            for key, value in changes.items()}))


@pytest.mark.parametrize("key, value, message", [
    ("head__pooling", "max",
     "head.pooling must be one of flatten, average, average_max, got 'max'"),
    ("head__normalize", "yes", "head.normalize must be true or false, got 'yes'"),
    ("head__units", -1, "head.units must be a whole number >= 0, got -1"),
    ("head__dropout", 1.0, r"head.dropout must be a number in \[0, 1\), got 1.0"),
    ("head__l2", -0.1, "head.l2 must be a number >= 0, got -0.1"),
    ("head__class_weight", "auto",
     "head.class_weight must be one of none, balanced, balanced_by_source"),
    ("head__restore_best", None, "head.restore_best must be true or false, got None"),
])
def test_a_bad_head_param_is_one_clear_error(tmp_path, key, value, message):
    with pytest.raises(PipelineError, match=f"^params.yaml: {message}"):
        params(tmp_path, **{key: value})


@pytest.mark.parametrize("key, value, message", [
    ("binary__lr", -0.0005, "tasks.binary.lr must be a number > 0, got -0.0005"),
    ("binary__epochs", 0, "tasks.binary.epochs must be a whole number >= 1, got 0"),
    ("binary__epochs", "ten", "tasks.binary.epochs must be a whole number >= 1, got 'ten'"),
    ("binary__batch_size", 0, "tasks.binary.batch_size must be a whole number >= 1, got 0"),
])
def test_a_bad_task_param_is_one_clear_error(tmp_path, key, value, message):
    with pytest.raises(PipelineError, match=f"^params.yaml: {message}"):
        params(tmp_path, **{f"tasks__{key}": value})


def test_a_task_can_change_keys_of_the_head_for_itself_only(tmp_path):
    loaded = params(tmp_path, tasks__binary__head={"variance_floor": 0.2, "l2": 0.1})
    assert loaded.recipe("binary").head == dataclasses.replace(loaded.head, variance_floor=0.2,
                                                               l2=0.1)
    assert loaded.head.l2 != 0.1 and loaded.head.variance_floor != 0.2  # else it says little
    assert loaded.recipe("three").head == loaded.head


@pytest.mark.parametrize("head, message", [
    ({"variance_floor": -1}, r"tasks.binary.head.variance_floor must be a number >= 0, got -1"),
    ({"units": 64, "depth": 2}, r"tasks.binary.head.depth is not a known key; known:"
                                r" class_weight, dropout, l2, normalize, pooling, .*"),
    ({"units": "many"}, r"tasks.binary.head.units must be a whole number >= 0, got 'many'"),
    ("strong", r"tasks.binary.head must be a mapping of keys to values, got 'strong'"),
])
def test_a_bad_task_head_is_named_as_the_tasks(tmp_path, head, message):
    with pytest.raises(PipelineError, match=f"^params.yaml: {message}"):
        params(tmp_path, tasks__binary__head=head)


@pytest.mark.parametrize("change, message", [
    ({"backbone__trainable_blocks": 5}, "backbone.trainable_blocks must be 0 .frozen. to 3"),
    ({"backbone__trainable_blocks": 1, "backbone__fine_tune_lr": 0},
     "backbone.fine_tune_lr must be a number > 0"),
    ({"features__plain_view": "yes"}, "features.plain_view must be true or false"),
    ({"features__views": 0, "features__plain_view": False, "backbone__trainable_blocks": 1},
     "backbone.trainable_blocks > 0 needs the bank"),
])
def test_bad_fine_tuning_and_bank_params_are_named(tmp_path, change, message):
    with pytest.raises(PipelineError, match=f"^params.yaml: {message}"):
        params(tmp_path, **change)


def test_augment_names_a_preset_or_holds_the_settings(tmp_path):
    presets = yaml.safe_load((ROOT / "params.yaml").read_text())["augment_presets"]
    assert params(tmp_path, augment="mild").augment == Augment(**presets["mild"])
    assert params(tmp_path, augment=dict(presets["tutorial"])).augment.vertical_flip is True
    with pytest.raises(PipelineError, match="augment must be a preset of augment_presets"
                                            r" \(tutorial, mild\), got 'strong'"):
        params(tmp_path, augment="strong")
    without_zoom = {key: value for key, value in presets["mild"].items() if key != "zoom"}
    with pytest.raises(PipelineError, match=r"augment_presets\.mild\.zoom is missing"):
        params(tmp_path, augment_presets__mild=without_zoom)
    with pytest.raises(PipelineError, match=r"^params.yaml: augment\.zoom is missing"):
        params(tmp_path, augment=without_zoom)


@pytest.mark.slow
def test_train_stops_at_a_bad_param_with_one_line_before_touching_outputs(tmp_path):
    """A bad value fails at once, in one line, and leaves the last run's outputs alone."""
    write = Path(tmp_path, "metrics/train/binary/metrics.json")
    write.parent.mkdir(parents=True)
    write.write_text("{}")
    params_with(tmp_path, {"tasks.binary.lr": -0.0005})
    run = subprocess.run([sys.executable, "-m", "stages.train", "binary"], cwd=tmp_path,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        "error: params.yaml: tasks.binary.lr must be a number > 0, got -0.0005")
    assert write.read_text() == "{}"


def test_the_head_has_the_layers_its_params_name():
    head = heads.build_head(3, (4, 4, 8), pooling="average", normalize=True, units=0,
                            dropout=0.5, l2=0.01)
    kinds = [type(layer).__name__ for layer in head.layers]
    assert kinds == ["GlobalAveragePooling2D", "Normalization", "Dropout", "Dense"]
    assert head.get_layer("logits").kernel_regularizer.l2 == pytest.approx(0.01)
    both = heads.build_head(2, (4, 4, 8), pooling="average_max", units=0)
    features = np.random.default_rng(0).normal(size=(3, 4, 4, 8)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(both.layers[0](features)),
                               np.hstack([features.mean(axis=(1, 2)), features.max(axis=(1, 2))]),
                               rtol=1e-5)
    tutorial = heads.build_head(2, (4, 4, 8))  # the defaults are the tutorial's head
    assert [type(layer).__name__ for layer in tutorial.layers] == ["Flatten", "Dense", "Dense"]
    assert tutorial.layers[1].units == 256 and tutorial.output_shape == (None, 1)


def test_adapt_standardises_the_pooled_training_features():
    rng = np.random.default_rng(0)
    views = rng.normal(300, 50, size=(3, 20, 2, 2, 8)).astype("float32")  # views x N x map
    head = heads.build_head(2, (2, 2, 8), pooling="average", normalize=True, units=0)
    heads.adapt_head(head, views)
    pooled = views.reshape(60, 4, 8).mean(axis=1)
    normalised = keras.ops.convert_to_numpy(head.get_layer("normalize")(pooled))
    np.testing.assert_allclose(normalised.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(axis=0), 1, atol=1e-3)


def test_the_variance_floor_keeps_a_feature_dark_in_training_from_exploding():
    rng = np.random.default_rng(0)
    views = rng.normal(300, 50, size=(1, 40, 1, 1, 4)).astype("float32")
    views[..., 3] = 0.0  # zero on every training image, as some ReLU features are
    lit = np.array([[300, 300, 300, 5.0]], "float32")
    scaled = {}
    for floor in (0.0, 0.01):
        head = heads.build_head(2, (1, 1, 4), pooling="average", normalize=True, units=0)
        heads.adapt_head(head, views, variance_floor=floor)
        scaled[floor] = keras.ops.convert_to_numpy(head.get_layer("normalize")(lit))[0]
    assert scaled[0.0][3] > 1000  # Keras's own floor: 5 / sqrt(1e-7)
    assert scaled[0.01][3] == pytest.approx(5 / np.sqrt(0.01 * 3 * 50 ** 2 / 4), rel=0.1)
    np.testing.assert_allclose(scaled[0.01][:3], scaled[0.0][:3], rtol=1e-5)  # the rest as before


def test_balanced_weights_make_each_class_and_each_source_of_a_class_weigh_the_same():
    rows = pd.DataFrame({"label": [0, 0, 0, 0, 1, 1],
                         "source": ["kermany"] * 3 + ["nih", "covid-chestxray", "covid-chestxray"]})
    assert inputs.sample_weights(rows, 2, "none") is None
    balanced = inputs.sample_weights(rows, 2, "balanced")
    np.testing.assert_allclose(balanced, [6 / 8] * 4 + [6 / 4] * 2)
    by_source = inputs.sample_weights(rows, 2, "balanced_by_source")
    totals = pd.Series(by_source).groupby([rows["label"], rows["source"]]).sum()
    # normals: kermany (3 rows) and nih (1 row) each carry half; covid carries as much as normal
    assert totals[0, "kermany"] == pytest.approx(totals[0, "nih"])
    assert totals[0].sum() == pytest.approx(totals[1].sum()) == pytest.approx(3.0)
    assert by_source.sum() == pytest.approx(balanced.sum())


def test_bank_batches_carry_the_weights_of_their_rows():
    bank = np.arange(6, dtype="float32").reshape(1, 6, 1)
    weights = np.arange(6, dtype="float32") * 10
    x, y, w = inputs.BankBatches(bank, np.arange(6), np.arange(6), 4, seed=0,
                                   weights=weights)[0]
    np.testing.assert_array_equal(w, x[:, 0] * 10)
    np.testing.assert_array_equal(y, x[:, 0])


class History(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.val_loss = []

    def on_epoch_end(self, epoch, logs=None):
        self.val_loss.append(logs["val_loss"])


def test_restore_best_keeps_the_epoch_of_the_lowest_validation_loss():
    """Validation labels are the training labels flipped: validation loss climbs as the model
    learns, so the best epoch is an early one and the last epoch's weights must be dropped."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    task = make_task(lr=0.05, epochs=8, batch_size=8)
    keras.utils.set_random_seed(0)
    head = heads.build_head(2, (4,), units=0)
    history = History()
    kept = training.fit(head, {"x": x, "y": y, "validation_data": (x, 1 - y)}, task,
                        restore_best=True, callbacks=[history], verbose=0)
    assert kept == int(np.argmin(history.val_loss)) + 1 < task.epochs
    loss = keras.losses.BinaryCrossentropy(from_logits=True)(1 - y, head.predict(x, verbose=0))
    assert float(loss) == pytest.approx(min(history.val_loss), rel=1e-4)
    assert training.fit(head, {"x": x, "y": y, "validation_data": (x, 1 - y)}, task,
                        verbose=0) == task.epochs  # without it the last epoch stays


def test_fine_tuning_trains_block5_only_and_the_classifier_matches_bank_then_top():
    """trainable_blocks=1: the bank stores block4_pool; fit_on_bank trains the head, then block5
    with it. The saved classifier (image -> VGG16 -> head) is that same block5 and head."""
    keras.utils.set_random_seed(0)
    backbone = vgg.build_backbone("none", SIZE)
    images = np.random.default_rng(1).integers(0, 255, (12, SIZE, SIZE, 3)).astype("float32")
    to_bank = vgg.build_extractor(backbone, vgg.bank_layer(1))
    assert to_bank.output_shape[1:] == backbone.get_layer("block4_pool").output.shape[1:]
    plain = np.asarray(to_bank.predict(images, verbose=0), np.float32)
    features = {"bank": np.empty((0, *plain.shape), np.float32), "plain": plain}  # the default
    rows = pd.DataFrame({"image": range(12), "label": [0, 1] * 6})
    top = vgg.top_blocks(backbone, 1)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in backbone.layers}
    head = heads.build_head(2, top.output_shape[1:], pooling="average", normalize=True, units=0)
    task = make_task(lr=1e-3, epochs=2, batch_size=4, pooling="average", normalize=True,
                     class_weight="balanced")
    recipe = make_recipe(task, seed=0, plain_view=True, trainable_blocks=1, fine_tune_lr=1e-2,
                         fine_tune_epochs=2,
                         shard_size=5)  # block5's features of the 12 images carried in 3 shards
    trained, kept = training.fit_on_bank(head, features, rows, rows, recipe, top, verbose=0)
    assert kept == {"head": 2, "fine_tune": 2}
    for layer in backbone.layers:
        changed = any(not np.array_equal(a, b) for a, b in
                      zip(before[layer.name], layer.get_weights()))
        assert changed == (layer.name.startswith("block5_conv")), layer.name
    classifier = build_classifier(vgg.build_extractor(backbone), head)
    np.testing.assert_allclose(
        classifier.predict(images, verbose=0),
        head_probabilities(trained, plain, 4)[:, 1:], rtol=1e-4, atol=1e-5)


def test_the_reference_model_reads_pooled_features():
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    features = rng.normal(size=(40, 2, 2, 6)) + labels[:, None, None, None] * 2.0
    probe = reference_model(features, labels)
    assert probe.predict_proba(features).shape == (40, 2)
    assert (probe.predict(features) == labels).mean() > 0.9


def test_a_classifier_with_every_head_option_saves_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    extractor = vgg.build_extractor(vgg.build_backbone("none", SIZE))
    head = heads.build_head(3, extractor.output_shape[1:], pooling="average_max", normalize=True,
                            units=8, dropout=0.3, l2=0.01)
    images = np.random.default_rng(0).integers(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    heads.adapt_head(head, [extractor.predict(images, verbose=0) + 1.0])
    classifier = build_classifier(extractor, head)
    classifier.save(tmp_path / "m.keras")
    again = load_classifier(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(images, verbose=0),
                               classifier.predict(images, verbose=0), rtol=1e-6)


def test_a_feature_block_cuts_vgg16_and_fine_tuning_counts_blocks_back_from_it():
    """feature_block 4: the head reads block4_pool; trainable_blocks 1 trains block4 on a bank
    of block3_pool, and nothing of block5 exists."""
    backbone = vgg.build_backbone("none", SIZE, feature_block=4)
    assert backbone.layers[-1].name == "block4_pool" and vgg.blocks_of(backbone) == 4
    assert not any(layer.name.startswith("block5") for layer in backbone.layers)
    to_bank = vgg.build_extractor(backbone, vgg.bank_layer(1, 4))
    top = vgg.top_blocks(backbone, 1)
    assert top.input_shape[1:] == to_bank.output_shape[1:] == (4, 4, 256)
    assert top.output_shape[1:] == (2, 2, 512)  # block4_pool at 32 px
    assert [layer.name for layer in top.layers if layer.trainable_weights] == [
        "block4_conv1", "block4_conv2", "block4_conv3"]


@pytest.mark.parametrize("backbone, message", [
    ({"feature_block": 6}, "backbone.feature_block must be 1 to 5, got 6"),
    ({"feature_block": 2, "trainable_blocks": 2},
     "backbone.trainable_blocks must be 0 (frozen) to 1 (below backbone.feature_block), got 2"),
])
def test_a_feature_block_the_fine_tuning_cannot_fit_is_a_clear_error(tmp_path, backbone,
                                                                     message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        params(tmp_path, **{f"backbone__{key}": value for key, value in backbone.items()})
