import pytest

from stages import repeat
from stages.common import PipelineError
from tests.conftest import write_params


def test_spread_is_mean_sample_sd_and_range():
    result = repeat.spread([0.5, 0.7, 0.6])
    assert result["mean"] == pytest.approx(0.6) and result["sd"] == pytest.approx(0.1)
    assert (result["min"], result["max"], result["values"]) == (0.5, 0.7, [0.5, 0.7, 0.6])
    assert repeat.spread([0.4])["sd"] == 0.0


@pytest.mark.parametrize("changes, message", [
    ({"repeat": {"splits": 0}}, r"params.yaml: repeat.splits must be a whole number >= 1"),
    ({"bank": {"views": 0}}, r"params.yaml: repeat needs the augmentation bank \(bank.views > 0\)"),
])
def test_bad_repeat_params_are_named(tmp_path, monkeypatch, changes, message):
    monkeypatch.chdir(tmp_path)
    write_params(**changes)
    with pytest.raises(PipelineError, match=message):
        repeat.main()
