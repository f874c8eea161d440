"""Not a frontal chest X-ray? The distance and threshold maths (covidxray/evaluation/ood.py), the
probe sets (covidxray/evaluation/non_xray.py) and the `ood` params."""

import numpy as np
import pytest

from covidxray.config.params import load_params
from covidxray.config.schema import Backbone, Ood, Preprocess
from covidxray.errors import PipelineError
from covidxray.evaluation import ood, non_xray
from tests.conftest import METADATA_HEADER, params_with, write_image


def unit(*rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_cell_directions_average_every_position_then_scale_to_unit_length():
    maps = np.zeros((2, 2, 2, 3), np.float32)
    maps[0, 0, 0] = [4, 0, 0]  # one bright position: the mean, then the direction
    maps[1] = [0, 3, 4]
    np.testing.assert_allclose(ood.cell_directions(maps), [[1, 0, 0], [0, 0.6, 0.8]], atol=1e-6)


def test_a_grid_keeps_where_things_are_so_an_image_upside_down_lies_elsewhere():
    maps = np.zeros((1, 4, 4, 2), np.float32)
    maps[0, :2, :, 0] = 1  # the top half bright in channel 0, the bottom in channel 1
    maps[0, 2:, :, 1] = 1
    flipped = maps[:, ::-1]
    # one mean: the same
    np.testing.assert_allclose(ood.cell_directions(maps), ood.cell_directions(flipped))
    upright, upside_down = ood.cell_directions(maps, 2), ood.cell_directions(flipped, 2)
    assert upright.shape == (1, 8)
    np.testing.assert_allclose(upright, [[0.5, 0, 0.5, 0, 0, 0.5, 0, 0.5]], atol=1e-6)
    assert ood.kth_distances(upright, upside_down, 1)[0] == pytest.approx(1.0)  # orthogonal


def test_a_grid_finer_than_the_feature_map_is_a_clear_error():
    with pytest.raises(PipelineError, match=r"ood.grid is 2, but the backbone's feature map is"
                                            r" 1 x 1 positions at this image_size; lower it"):
        ood.cell_directions(np.ones((3, 1, 1, 8)), 2)


def test_the_distance_is_the_cosine_distance_to_the_kth_nearest_reference_vector():
    angles = np.radians([0, 10, 30, 60])
    reference = unit(*np.stack([np.cos(angles), np.sin(angles)], axis=1))
    query = unit([1, 0], [0, 1])
    for k in (1, 2, 3):
        expected = [1 - np.cos(angles[k - 1]), 1 - np.cos(np.radians(90) - angles[::-1][k - 1])]
        np.testing.assert_allclose(ood.kth_distances(reference, query, k), expected, atol=1e-6)
    assert ood.kth_distances(reference, np.empty((0, 2)), 2).shape == (0,)


def made_with():
    return {"backbone": Backbone("hed", "float32"), "size": 32, "preprocess": Preprocess(),
            "fingerprint": "f" * 64}


def test_the_threshold_keeps_the_keep_share_of_validation_images_under_it():
    rng = np.random.default_rng(0)
    train = unit(*rng.normal(size=(50, 8)) + 5)  # a cluster
    val = unit(*rng.normal(size=(200, 8)) + 5)
    reference = ood.fit(train, val, Ood(neighbours=3, keep=0.9, grid=1), **made_with())
    distances = ood.kth_distances(train, val, 3)
    assert reference.threshold == pytest.approx(np.quantile(distances, 0.9))
    assert (distances > reference.threshold).mean() == pytest.approx(0.1, abs=0.01)
    far = unit(*-rng.normal(size=(5, 8)) - 5)  # the opposite direction: all flagged
    assert all(reference.why(d).startswith("does not look like a frontal chest X-ray")
               for d in reference.distances(far))
    assert reference.why(reference.threshold) is None


def test_more_neighbours_than_training_images_is_a_clear_error():
    with pytest.raises(PipelineError, match=r"ood.neighbours is 5, but the split has 3"
                                            r" training image\(s\); lower it"):
        ood.fit(unit([1, 0], [0, 1], [1, 1]), unit([1, 2]), Ood(5, 0.99, 1), **made_with())


def test_a_reference_reads_back_as_written_and_a_damaged_one_says_how_to_rebuild(tmp_path):
    reference = ood.fit(unit([1, 0], [0, 1], [1, 1]), unit([1, 2]), Ood(2, 0.5, 2), **made_with())
    path = tmp_path / "ood.npz"
    ood.write_reference(reference, path)
    again = ood.read_reference(path)
    np.testing.assert_array_equal(again.vectors, reference.vectors)
    assert (again.neighbours, again.grid, again.threshold, again.backbone, again.size,
            again.preprocess, again.fingerprint) == (2, 2, reference.threshold,
                                                     *list(made_with().values()))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(PipelineError, match=r"ood.npz: cannot read .*; run `dvc repro ood`"):
        ood.read_reference(path)


def test_no_reference_file_is_no_check(tmp_path):
    assert ood.load_xray_check(tmp_path / "ood.npz") is None


def test_the_drawn_probe_sets_are_the_same_every_run_and_differ_by_seed():
    first, again, other = (non_xray.as_files(non_xray.drawn_sets(seed)["grey_noise"][:2], 32,
                                           Preprocess()) for seed in (42, 42, 43))
    assert first.shape == (2, 32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_every_photo_and_page_loads_offline():
    sets = non_xray.drawn_sets(0)
    assert len(sets["photos"]) == len(non_xray.PHOTOS)
    assert len(sets["text"]) == non_xray.DRAWN + 2  # and skimage's scanned text and page
    assert all(image.mode == "RGB" for image in sets["photos"])


def test_lateral_and_ct_rows_are_probes_and_a_missing_file_is_named(tmp_path):
    rows = ["1,0,M,60,COVID-19,,L,X-ray,2020,,lat.png\n",
            "2,0,M,60,COVID-19,,Axial,CT,2020,,ct.png\n",
            "3,0,M,60,COVID-19,,PA,X-ray,2020,,pa.png\n",  # a frontal X-ray: no probe
            "4,0,M,60,No Finding,,Coronal,CT,2020,,gone.png\n"]
    (tmp_path / "metadata.csv").write_text(METADATA_HEADER + "".join(rows))
    for name in ("lat.png", "ct.png", "pa.png"):
        write_image(tmp_path / "images" / name)
    skipped = []
    assert non_xray.other_views(tmp_path, skipped) == {"lateral": [tmp_path / "images/lat.png"],
                                                     "ct": [tmp_path / "images/ct.png"]}
    assert skipped == [{"path": str(tmp_path / "images" / "gone.png"),
                        "reason": "listed in metadata.csv line 5, file missing"}]


@pytest.mark.parametrize("key, value, message", [
    ("ood.neighbours", 0, "ood.neighbours must be a whole number >= 1, got 0"),
    ("ood.keep", 1.5, r"ood.keep must be a number in \(0, 1\], got 1.5"),
    ("ood.keep", 0, r"ood.keep must be a number in \(0, 1\], got 0"),
    ("ood.kep", 0.9, "ood.kep is not a known key; did you mean ood.keep"),
    ("ood.grid", 0, "ood.grid must be a whole number >= 1, got 0"),
])
def test_bad_ood_params_are_named(tmp_path, key, value, message):
    with pytest.raises(PipelineError, match=message):
        load_params(params_with(tmp_path, {key: value}))


def test_a_frozen_classifier_shares_its_vgg16_with_the_check_and_gets_the_same_answers(
        tmp_path):
    """predict's check reuses the classifier's own VGG16 (one network built, one forward pass)
    where it made the reference, and gives the answers a separate pass gives; a VGG16 of other
    weights or another precision is not taken for it."""
    import keras

    from covidxray.app import prediction
    from covidxray.model.backbone import build_backbone, build_extractor, fingerprint
    from covidxray.model.classifier import build_classifier
    from covidxray.model.features import feature_pass, plain_features
    from covidxray.model.head import build_head

    keras.utils.set_random_seed(0)
    extractor = build_extractor(build_backbone("none", 32))
    classifier = build_classifier(extractor, build_head(3, extractor.output_shape[1:], units=0))
    images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    vectors = ood.cell_directions(plain_features(extractor, images, 4))
    made = {**made_with(), "backbone": Backbone("none", "float32"),
            "fingerprint": fingerprint(extractor)}
    ood.write_reference(ood.fit(vectors[:8], vectors[8:], Ood(3, 0.5, 1), **made),
                        tmp_path / "ood.npz")
    shared = ood.load_xray_check(tmp_path / "ood.npz", extractor=extractor)
    assert shared.extractor is extractor
    apart = ood.XrayCheck(shared.reference, feature_pass(extractor))  # a pass of its own
    decoded = dict(enumerate(images))
    results = [prediction.judged(prediction.Classifier(
        classifier, ["a", "b", "c"], 32, Preprocess(), {}, check), [], decoded)
        for check in (shared, apart)]
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-6)
    assert results[0][1] == results[1][1] and any(results[0][1]) and not all(results[0][1])
    other = build_extractor(build_backbone("none", 32))  # other random weights
    assert not ood.made(shared.reference, other)
    bfloat = build_extractor(build_backbone("none", 32, precision="mixed_bfloat16"))
    bfloat.set_weights(extractor.get_weights())
    assert not ood.made(shared.reference, bfloat) and ood.made(shared.reference, extractor)
