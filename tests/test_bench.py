import sys

import h5py
import numpy as np
import pytest

from bench import device_files
from bench.__main__ import stage_names, timed
from bench.hardware import conv_flops
from covidxray.model import build_backbone
from tests.conftest import ROOT


def test_vgg16_conv_flops_match_the_published_count():
    # VGG16's 13 conv layers at 224x224: 15.35 G multiply-adds (Simonyan & Zisserman, 2014)
    assert conv_flops(build_backbone("none", 224)) == pytest.approx(30.69e9, rel=1e-3)


def test_timed_reports_the_peak_memory_of_a_grandchild(tmp_path):
    grows = f"{sys.executable} -c 'x = bytearray(300 * 2**20); print(len(x))'"
    result = timed(["sh", "-c", grows], tmp_path, tmp_path / "log")
    assert result["peak_mib"] >= 300
    assert result["output"].strip() == str(300 * 2**20)


def test_timed_stops_with_the_log_of_a_failed_command(tmp_path):
    with pytest.raises(SystemExit, match="log"):
        timed(["sh", "-c", "echo broken; exit 3"], tmp_path, tmp_path / "log")


def test_stage_names_follow_dvc_yaml_with_one_stage_per_task():
    names = stage_names(ROOT, ["binary", "three"])
    assert names[:6] == ["merge", "split", "prepare", "features", "external", "repeat"]
    assert names[6:] == ["train@binary", "train@three", "evaluate@binary", "evaluate@three",
                         "confound", "controls", "plots", "report"]


def test_the_device_weights_are_hed_rounded_to_float16_and_load_as_a_path(tmp_path, monkeypatch):
    monkeypatch.setattr(device_files, "WEIGHTS", tmp_path / "half.weights.h5")
    device_files.half_weights(32)
    with h5py.File(device_files.WEIGHTS) as h5:
        dtypes = set()
        h5.visititems(lambda _, item: dtypes.add(str(item.dtype))
                      if isinstance(item, h5py.Dataset) else None)
    assert dtypes == {"float16"}  # half the bytes of hed's float32 file
    hed = build_backbone("hed", 32).get_weights()
    loaded = build_backbone(str(device_files.WEIGHTS), 32).get_weights()
    for want, got in zip(hed, loaded):
        np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))


def test_selection_ranks_by_mean_validation_accuracy_and_names_changed_params():
    import pandas as pd

    from bench import selection

    def row(name, typ, accuracies, lr=0.001):
        cells = {"name": name, "typ": typ, "tasks.binary.lr": lr}
        for task, accuracy in zip(selection.TASKS, accuracies):
            for model in ("head", "reference"):
                cells |= {f"{task}.{model}.val.accuracy.mean": accuracy,
                          f"{task}.{model}.val.accuracy.sd": 0.01,
                          f"{task}.{model}.val.loss.mean": accuracy and 1 - accuracy}
        return cells

    extra = [0.8] * (len(selection.TASKS) - 3)  # the tasks after the tutorial's three
    table = pd.DataFrame([row("base", "baseline", [0.9, 0.8, 0.7, *extra]),
                          row("better", "branch_commit", [0.9, 0.9, 0.8, *extra], lr=0.01),
                          row("queued", "branch_commit", [None] * len(selection.TASKS))])
    ranked = selection.ranked(table)
    assert [r["name"] for r in ranked] == ["better", "base"]  # the unfinished one is left out
    assert ranked[0]["params"] == "tasks.binary.lr=0.01" and ranked[1]["params"] == ""
    assert ranked[0]["accuracy"] == pytest.approx((2.6 + sum(extra)) / len(selection.TASKS))
    page = selection.markdown(ranked, {t: (0.5, 0.1) for t in selection.TASKS})
    assert page.splitlines()[2].startswith("| better | tasks.binary.lr=0.01 | 0.900 ± 0.010")
    assert page.splitlines()[-1].startswith("| reference |")
