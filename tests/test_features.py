import keras
import numpy as np

from covidxray.model.augment import augmenter
from covidxray.model.backbone import build_backbone, build_extractor
from covidxray.model.features import augmented_views, plain_features
from tests.test_model import AUGMENT, SIZE, images


def views_with_seed(extractor, x, seed):
    keras.utils.set_random_seed(seed)
    return augmented_views(extractor, augmenter(AUGMENT), x, views=3, batch_size=2)


def test_the_bank_holds_distinct_augmented_views_of_every_image_and_is_seeded():
    extractor = build_extractor(build_backbone("none", SIZE))
    x = images(5).astype("uint8")
    bank = views_with_seed(extractor, x, 1)
    assert bank.shape == (3, 5, 1, 1, 512) and bank.dtype == np.float32
    assert not np.allclose(bank[0], bank[1])  # each view a fresh augmentation
    np.testing.assert_array_equal(bank, views_with_seed(extractor, x, 1))
    assert not np.allclose(bank, views_with_seed(extractor, x, 2))


def test_plain_features_are_the_extractors_output_in_float32():
    extractor = build_extractor(build_backbone("none", SIZE, "mixed_bfloat16"))
    x = images(3).astype("uint8")
    features = plain_features(extractor, x, 2)
    assert features.dtype == np.float32
    expected = extractor.predict(x.astype("float32"), verbose=0).astype("float32")
    # the bank's pass casts the pixels on the device: under a compiler (XLA) that fuses the
    # cast into the bfloat16 graph, a feature may round to the next bfloat16 value
    np.testing.assert_allclose(features, expected, rtol=2**-7, atol=2**-8 * np.abs(expected).max())
