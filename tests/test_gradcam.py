import keras
import numpy as np
import pytest

from covidxray.errors import PipelineError
from covidxray.evaluation.gradcam import gradcam, gradients, overlay
from covidxray.model import backbone as b, head as h, classifier as m

# RGB at the ImageNet mean: zero after VGG16's input scaling, so zero activations throughout
# the untrained backbone, whose biases start at zero
MEAN_RGB = np.array([123.68, 116.779, 103.939], dtype="float32")


def classifier(size, n_classes, precision="float32"):
    keras.utils.set_random_seed(0)
    extractor = b.build_extractor(b.build_backbone("none", size, precision))
    return m.build_classifier(extractor, h.build_head(n_classes, extractor.output_shape[1:]))


def set_head(model, last_kernel):
    """Hidden layer with weights >= 0 and bias > 0: on the backbone's ReLU features every
    hidden unit is active, so the logits are linear in the features: hidden @ last_kernel."""
    hidden, last = model.get_layer("head").layers[1:]
    rng = np.random.default_rng(1)
    hidden.set_weights([rng.uniform(0, 0.01, hidden.kernel.shape), np.full(hidden.units, 0.1)])
    last.set_weights([last_kernel, np.zeros(last.units)])
    return keras.ops.convert_to_numpy(hidden.kernel), last_kernel


def images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_one_heatmap_per_image_over_block5_conv3_in_0_1():
    maps = gradcam(classifier(32, 4), images(3, 32), [0, 2, 3])
    assert maps.shape == (3, 2, 2) and maps.dtype == np.float32  # 32 px: block5_conv3 is 2x2
    peaks = maps.max(axis=(1, 2))
    assert maps.min() >= 0 and peaks.max() == 1
    assert np.all((peaks == 1) | (peaks == 0))  # the map of a class with no evidence is 0


def test_a_backbone_cut_after_block4_maps_over_block4_conv3():
    keras.utils.set_random_seed(0)
    extractor = b.build_extractor(b.build_backbone("none", 32, feature_block=4))
    model = m.build_classifier(extractor, h.build_head(2, extractor.output_shape[1:]))
    assert gradcam(model, images(2, 32), [0, 1]).shape == (2, 4, 4)  # 32 px: block4 is 4x4


def test_matches_grad_cam_computed_by_hand_for_a_linear_head():
    """At 32 px block5_pool is 1x1, so d logit_c / d pooled = hidden kernel @ last kernel[:, c]
    and every channel's mean gradient over the 2x2 map is a quarter of that."""
    model = classifier(32, 3)
    w1, w2 = set_head(model, np.random.default_rng(2).normal(size=(256, 3)))
    x, picked = images(4, 32), [0, 1, 2, 1]
    vgg = model.get_layer("features").get_layer("vgg16")
    conv = keras.Model(vgg.input, vgg.get_layer("block5_conv3").output)
    a = conv.predict(m.VGGPreprocess()(x.astype("float32")), verbose=0)
    weights = (w1 @ w2).T[picked] / 4
    expected = np.maximum(np.einsum("nhwk,nk->nhw", a, weights), 0)
    peaks = expected.max(axis=(1, 2), keepdims=True)
    assert np.count_nonzero(peaks) >= 2  # else the comparison says little
    expected = np.divide(expected, peaks, out=expected, where=peaks > 0)
    np.testing.assert_allclose(gradcam(model, x, picked), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_the_map_follows_the_evidence(precision):
    """Two images, blank but for a noise patch in opposite corners; logits rising with every
    feature. Far from its patch an image has no features, so its map must be zero there; the
    score's opposite (class 0 of a sigmoid) has no supporting evidence at all."""
    size, patch, reach = 192, 24, 8  # the patch reaches 8 of block5_conv3's 12x12 cells
    model = classifier(size, 2, precision)
    set_head(model, np.full((256, 1), 0.01))
    x = np.tile(MEAN_RGB, (2, size, size, 1))
    noise = np.random.default_rng(0).integers(0, 256, (2, patch, patch, 3))
    x[0, :patch, :patch], x[1, -patch:, -patch:] = noise
    top_left, bottom_right = gradcam(model, x, [1, 1])
    assert top_left.max() == 1 and not top_left[reach:].any() and not top_left[:, reach:].any()
    assert bottom_right.max() == 1 and not bottom_right[:-reach].any() \
        and not bottom_right[:, :-reach].any()
    assert not gradcam(model, x, [0, 0]).any()


def test_gradients_of_a_per_sample_function_are_per_sample():
    x = keras.ops.convert_to_tensor([[1.0, 2.0], [3.0, -1.0]])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gradients(lambda v: v ** 3, x)),
                               [[3, 12], [27, 3]])


def test_gradients_need_a_backend_with_autodiff(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "numpy")
    with pytest.raises(PipelineError, match="needs the tensorflow or jax Keras backend, not numpy"):
        gradients(lambda v: v, np.ones(2))


def test_a_model_without_vgg16_is_a_clear_error():
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(1)])
    with pytest.raises(PipelineError, match="no layer 'features'"):
        gradcam(model, images(1, 32), [0])


def test_overlay_is_an_rgb_image_of_the_images_size():
    image = images(1, 40)[0][:30]  # not square, not the heatmap's shape
    heat = np.array([[0, 1], [0.5, 0]], dtype="float32")
    blended = overlay(image, heat)
    assert blended.shape == (30, 40, 3) and blended.dtype == np.uint8
    assert not np.array_equal(blended, image)
    np.testing.assert_array_equal(overlay(image, heat, alpha=0), image)
    hot = overlay(np.zeros((30, 40, 3), np.uint8), np.ones((2, 2)), alpha=1)
    np.testing.assert_array_equal(hot[0, 0], [128, 0, 0])  # jet's top colour, dark red
