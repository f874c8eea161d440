"""The report's one-line description of a trained model (models/<task>.json)."""

import pytest

from stages.report import describe_head

HEAD = {"pooling": "flatten", "normalize": True, "units": 0, "dropout": 0.5, "l2": 0.01,
        "class_weight": "balanced", "variance_floor": 0.01}
RECORD = {"backbone": {"trainable_blocks": 0}, "preprocess": {"crop": 0.1, "clahe": 0.0},
          "epochs_kept": {"head": 3}}


@pytest.mark.parametrize("change, words", [
    ({}, "images: 10% of each side cropped; flatten pooling, standardised (variance floor 0.01),"
         " linear, dropout 0.5"),
    # the floor acts on the standardisation only: without it there is nothing to name
    ({"normalize": False}, "images: 10% of each side cropped; flatten pooling, linear, dropout"),
    ({"variance_floor": 0.0, "units": 256}, "flatten pooling, standardised, Dense(256, relu) then"
                                            " linear, dropout"),
])
def test_the_head_is_described_with_its_preprocessing_and_scaling(change, words):
    assert words in describe_head({**RECORD, "head": {**HEAD, **change}})
