"""What the machine runs on: the measured precision and bank batch size, remembered per machine."""

import json

import keras
import numpy as np
import pytest

from covidxray.config.params import load_params
from covidxray.config.schema import Backbone, Features
from covidxray.errors import PipelineError
from covidxray.model import features, machine
from covidxray.model.augment import augmenter
from covidxray.model.backbone import build_backbone, build_extractor
from tests.conftest import params_with
from tests.test_model import AUGMENT, SIZE


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "covidxray"


def test_a_measurement_is_made_once_per_machine_then_read_back(cache):
    calls = []
    measure = lambda: calls.append(1) or {"precision": "float32"}  # noqa: E731
    assert machine.remembered("precision", "here", measure) == {"precision": "float32"}
    assert machine.remembered("precision", "here", measure) == {"precision": "float32"}
    assert machine.remembered("precision", "elsewhere", measure) == {"precision": "float32"}
    assert len(calls) == 2  # once for each key
    assert set(json.loads((cache / "precision.json").read_text())) == {"here", "elsewhere"}


def test_an_unreadable_cache_is_measured_again_and_rewritten(cache):
    cache.mkdir()
    (cache / "precision.json").write_text("{not json")
    assert machine.remembered("precision", "here", lambda: 7) == 7
    assert json.loads((cache / "precision.json").read_text()) == {"here": 7}


def test_a_cache_that_cannot_be_written_still_answers(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # no folder can be made inside a file
    assert machine.remembered("precision", "here", lambda: 3) == 3
    assert "cannot keep it" in capsys.readouterr().out


def test_auto_precision_is_a_policy_measured_on_this_machine(cache):
    chosen = machine.resolved_precision("auto")
    assert chosen in machine.POLICIES
    kept = json.loads((cache / "precision.json").read_text())[machine.here()]
    assert kept["precision"] == chosen and set(kept["convs_per_s"]) == set(machine.POLICIES)
    assert all(rate > 0 for rate in kept["convs_per_s"].values())
    assert machine.resolved_precision("float32") == "float32"  # a policy stands for itself
    backbone = build_backbone("none", SIZE, "auto")
    assert backbone.get_layer("block1_conv1").dtype_policy.name == chosen


def test_bfloat16_is_chosen_only_when_clearly_faster(monkeypatch):
    for bf16, expected in ((1.0, "float32"), (1.2, "float32"), (1.3, "mixed_bfloat16")):
        monkeypatch.setattr(machine, "conv_rate",
                            lambda dtype, b=bf16: b if dtype == "bfloat16" else 1.0)
        assert machine.measured_precision()["precision"] == expected


def test_the_bank_batch_grows_while_it_pays_and_a_batch_stays_short(monkeypatch):
    # images a second by batch size: doubling pays up to 256, then gains under 10%
    rates = {32: 100.0, 64: 180.0, 128: 300.0, 256: 400.0, 512: 420.0, 1024: 430.0}
    monkeypatch.setattr(features, "batch_rate", lambda model, size: rates[size])
    assert features.measured_batch_size(None, seconds=10) == 256
    assert features.measured_batch_size(None, seconds=0.5) == 32  # 64 images would take 0.64 s


def test_bank_batch_auto_measures_the_feature_pass_once(cache):
    extractor = build_extractor(build_backbone("none", SIZE))
    backbone = Backbone(weights="none", precision="float32")
    auto = Features(views=0, plain_view=True, batch_size="auto")
    size = features.bank_batch(auto, backbone, extractor)
    assert size in features.BATCH_SIZES
    (key, kept), = json.loads((cache / "bank_batch_size.json").read_text()).items()
    assert kept == size and f"{(SIZE, SIZE, 3)} to" in key and "float32" in key
    assert features.bank_batch(Features(views=0, plain_view=True, batch_size=8), backbone,
                           extractor) == 8


@pytest.mark.parametrize("value", ["big", 0])
def test_a_bad_bank_batch_size_is_one_params_line(tmp_path, value):
    with pytest.raises(PipelineError, match=r"^params.yaml: features.batch_size must be a whole"
                                            rf" number >= 1, got {value!r}$"):
        load_params(params_with(tmp_path, {"features.batch_size": value}))
    loaded = load_params(params_with(tmp_path, {"features.batch_size": "auto"}))
    assert loaded.features.batch_size == "auto"


def test_the_pass_casts_stored_pixels_on_the_device_and_augments_inside():
    extractor = build_extractor(build_backbone("none", SIZE))
    images = np.random.default_rng(0).integers(0, 255, (4, SIZE, SIZE, 3)).astype("uint8")
    plain = features.feature_pass(extractor)
    assert plain.inputs[0].dtype == "uint8"
    np.testing.assert_allclose(plain.predict_on_batch(images),
                               extractor.predict_on_batch(images.astype("float32")), rtol=1e-5)
    keras.utils.set_random_seed(0)
    augmented = features.feature_pass(extractor, augmenter(AUGMENT))
    first, second = (augmented.predict_on_batch(images) for _ in range(2))
    assert not np.allclose(first, second)  # each call a fresh draw, inside the compiled step
