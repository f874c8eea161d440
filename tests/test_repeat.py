import json

import pytest

from covidxray.errors import PipelineError
from covidxray.evaluation.report import repeat_section
from covidxray.evaluation.scoring import spread
from covidxray.paths import DETAIL
from stages import repeat
from tests.conftest import write_params


def test_spread_is_mean_sample_sd_and_range():
    result = spread([0.5, 0.7, 0.6])
    assert result["mean"] == pytest.approx(0.6) and result["sd"] == pytest.approx(0.1)
    assert (result["min"], result["max"], result["values"]) == (0.5, 0.7, [0.5, 0.7, 0.6])
    assert spread([0.4])["sd"] == 0.0


def test_bad_repeat_params_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(repeat={"splits": 0})
    with pytest.raises(PipelineError, match=r"params.yaml: repeat.splits must be a whole number"):
        repeat.main()


def test_without_a_bank_repeat_records_that_it_was_skipped(tmp_path, monkeypatch):
    """features.views = 0 is a valid config: the pipeline goes on, and the report says why."""
    monkeypatch.chdir(tmp_path)
    params = write_params(features={"views": 0, "plain_view": False})
    repeat.main()
    result = json.loads((DETAIL / "repeat.json").read_text())
    assert set(result) == set(params["tasks"])
    assert all(r["skipped"].startswith("skipped: repeat needs the bank")
               for r in result.values())
    assert "needs the bank" in "".join(repeat_section(result["binary"]))
