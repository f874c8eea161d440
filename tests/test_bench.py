import json
import sys
import tarfile

import h5py
import numpy as np
import pytest

from bench import device_files, ood_grid
from bench.__main__ import fitted, reused_baseline, stage_names, table, timed, train_seconds
from bench.hardware import conv_flops
from covidxray.config.schema import Ood
from covidxray.model.backbone import build_backbone
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
    assert names[:8] == ["check", "merge", "split", "prepare", "external", "features", "repeat",
                         "holdout"]  # features reads the external sets' images too
    assert names[8:] == ["train@binary", "train@three", "evaluate@binary", "evaluate@three",
                         "confound", "controls", "plots", "ood", "report"]


def test_a_reused_recipe_keeps_the_date_it_ran_through_later_reuses(tmp_path):
    row = {"task": "binary", "baseline_seconds": 184.0, "baseline_peak_mib": 1179.0,
           "baseline_epochs": 20, "baseline_images_per_s": 11.4, "baseline_test_accuracy": 0.9}
    ran = tmp_path / "ran.json"
    ran.write_text(json.dumps({"date": "2026-12-01", "tasks": [row]}))
    assert reused_baseline(ran)["date"] == "2026-12-01"
    reused = tmp_path / "reused.json"  # a later --reuse-baseline run wrote it
    reused.write_text(json.dumps({"date": "2026-12-05", "baseline_date": "2026-12-01",
                                  "tasks": [row]}))
    assert reused_baseline(reused)["date"] == "2026-12-01"
    assert reused_baseline(reused)["binary"]["seconds"] == 184.0


def test_the_fits_time_and_passes_are_read_for_lbfgs_and_keras_heads_alike():
    lbfgs = "features: ...\ntrain binary: L-BFGS in 48 iterations, 0.9 s\nI0000 a log line"
    adam = "train three: 60 epochs, kept the weights of epoch(s) {'head': 3}, 41.5 s"
    assert train_seconds(lbfgs) == 0.9 and train_seconds(adam) == 41.5
    assert fitted({"epochs_kept": {"lbfgs": 48}}, 60) == ("L-BFGS, 48 it.", 1)
    assert fitted({"epochs_kept": {"head": 3}}, 60) == (60, 60)


def test_the_table_compares_the_recipes_tasks_and_lists_the_others_alone():
    row = {"epochs": 20, "project_seconds": 10.0, "project_images_per_s": 400.0,
           "project_peak_mib": 900.0, "project_test_accuracy": 0.5}
    recipe = {"baseline_epochs": 20, "baseline_seconds": 200.0, "baseline_images_per_s": 9.0,
              "baseline_peak_mib": 1100.0, "baseline_test_accuracy": 0.9}
    summary = {"tasks": [{"task": "binary", **row, **recipe}, {"task": "adult_covid", **row}],
               "total": {"baseline_seconds": 1000.0, "project_seconds": 250.0,
                         "baseline_peak_mib": 1100.0, "project_peak_mib": 1200.0}}
    lines = table(summary).splitlines()
    assert ("| binary | 20 / 20 | 200 / 10 | 0.050 | 9.0 / 400 | 1100 / 900 | 0.900 / 0.500 |"
            in lines)
    assert "| adult_covid | - / 20 | - / 10 | - | - / 400 | - / 900 | - / 0.500 |" in lines
    assert lines[-1].startswith("| all (whole `dvc repro`; the recipe: binary, three, four)")
    assert "| 1000 / 250 | 0.250 |" in lines[-1]


def test_the_device_files_stop_naming_the_parts_over_the_carry_limit(tmp_path, monkeypatch):
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "weights").write_bytes(b"x" * 3000)
    monkeypatch.setattr(device_files, "tree_bytes", lambda: 1000)
    monkeypatch.setattr(device_files, "CARRY_LIMIT", 5000)
    assert device_files.carried_mib([tmp_path / "big"]) == pytest.approx(4000 / 2**20)
    monkeypatch.setattr(device_files, "CARRY_LIMIT", 3500)
    with pytest.raises(SystemExit, match=r"big 0\.0 MiB, working tree 0\.0 MiB: over the 0 MiB"):
        device_files.carried_mib([tmp_path / "big"])


def test_the_device_data_unpacks_to_the_folders_the_stages_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("data/split", "data/prepared/images"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "file.npy").write_bytes(bytes(range(256)) * 4)
    device_files.pack_data(tmp_path / "out" / "data.tar.xz", ("data/split", "data/prepared"))
    with tarfile.open(tmp_path / "out" / "data.tar.xz") as tar:
        names = set(tar.getnames())
    assert {"data/split/file.npy", "data/prepared/images/file.npy"} <= names
    with pytest.raises(SystemExit, match="data/external missing"):
        device_files.pack_data(tmp_path / "out" / "again.tar.xz", ("data/split", "data/external"))


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

    # an older commit's experiments, which scored only the tutorial's three tasks
    table = pd.DataFrame([row("base", "baseline", [0.9, 0.8, 0.7]),
                          row("better", "branch_commit", [0.9, 0.9, 0.8], lr=0.01),
                          row("queued", "branch_commit", [None] * 3)])
    tasks = selection.tasks_in(table)
    assert tasks == ["binary", "three", "four"]
    ranked = selection.ranked(table, tasks)
    assert [r["name"] for r in ranked] == ["better", "base"]  # the unfinished one is left out
    assert ranked[0]["params"] == "tasks.binary.lr=0.01" and ranked[1]["params"] == ""
    assert ranked[0]["accuracy"] == pytest.approx(2.6 / 3)
    page = selection.markdown(ranked, {t: (0.5, 0.1) for t in tasks}, tasks)
    assert page.splitlines()[2].startswith("| better | tasks.binary.lr=0.01 | 0.900 ± 0.010")
    assert page.splitlines()[-1].startswith("| reference |")


def test_selection_reads_each_experiments_detail_from_its_commit(tmp_path, monkeypatch):
    """dvc exp show has the headline metrics only; the repeated splits' and holdout's scores
    come from metrics/detail/ in each experiment's commit, named as exp show names metrics."""
    import subprocess

    import pandas as pd

    from bench import selection

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "metrics" / "detail").mkdir(parents=True)
    (tmp_path / "metrics" / "detail" / "repeat.json").write_text(
        '{"binary": {"head": {"val": {"accuracy": {"mean": 0.75}}}}}')
    git("add", "-A")
    git("commit", "-qm", "a run")
    monkeypatch.chdir(tmp_path)
    table = selection.with_detail(pd.DataFrame({"rev": [git("rev-parse", "HEAD").strip(),
                                                        "0" * 40]}))
    assert table.loc[0, "binary.head.val.accuracy.mean"] == 0.75
    assert pd.isna(table.loc[1, "binary.head.val.accuracy.mean"])  # no such commit: no scores


def test_the_shortcut_table_ranks_by_covid_recall_less_adult_false_alarms():
    import pandas as pd

    from bench import selection

    def row(name, typ, recall, alarm, crop=0.0):
        prefix = "binary_mixed.head.val."
        return {"name": name, "typ": typ, "preprocess.crop": crop,
                f"{prefix}accuracy.mean": 0.8, f"{prefix}accuracy.sd": 0.1,
                f"{prefix}by_source.groups.covid/covid-chestxray/adult.recall.mean": recall,
                f"{prefix}by_source.groups.normal/nih/adult.recall.mean": 1 - alarm,
                f"{prefix}by_source.adult_false_alarm.mean": alarm,
                f"{prefix}by_source.adult_false_alarm.sd": 0.05}

    table = pd.DataFrame([row("base", "baseline", 0.8, 0.3),
                          row("cropped", "branch_commit", 0.75, 0.1, crop=0.1),  # 0.65
                          row("recall-only", "branch_commit", 0.95, 0.5)])      # 0.45
    ranked = selection.shortcut_ranked(table, "binary_mixed")
    assert [r["name"] for r in ranked] == ["cropped", "base", "recall-only"]
    page = selection.shortcut_markdown(ranked, ranked[1], "binary_mixed").splitlines()
    assert page[2] == ("| cropped | preprocess.crop=0.1 | 0.800 ± 0.100 | 0.75 | 0.10 ± 0.05 |"
                       " 0.65 |")


def test_the_holdout_table_ranks_by_left_out_recall_less_false_alarms_over_the_sources():
    import pandas as pd

    from bench import selection

    def row(name, typ, recalls, alarms, size=150):
        cells = {"name": name, "typ": typ, "image_size": size, "holdout.splits": 5}
        for source, recall, alarm in zip("ab", recalls, alarms):
            cells |= {f"left_out.{source}.val.recall.mean": recall,
                      f"left_out.{source}.val.recall.sd": 0.1,
                      f"left_out.{source}.val.false_alarm.mean": alarm,
                      f"left_out.{source}.val.false_alarm.sd": 0.02}
        return cells

    table = pd.DataFrame([row("base", "baseline", [0.4, 0.8], [0.0, 0.2]),          # 0.50
                          row("size-224", "branch_commit", [0.6, 0.8], [0.1, 0.1], 224),  # 0.60
                          row("queued", "branch_commit", [None, None], [None, None])])
    ranked = selection.holdout_ranked(table, ["a", "b"])
    assert [r["name"] for r in ranked] == ["size-224", "base"]  # the unfinished one left out
    assert ranked[0]["recall"] == pytest.approx(0.7) and ranked[0]["params"] == "image_size=224"
    page = selection.holdout_markdown(ranked, ["a", "b"]).splitlines()
    assert page[2] == ("| size-224 | image_size=224 | 5 | 0.60 ± 0.10 | 0.80 ± 0.10"
                       " | 0.70 | 0.10 | 0.60 |")


def test_the_bench_copy_gets_every_source_merge_reads_from_dvc_yaml(tmp_path):
    """`python -m bench` stopped at merge with "no NIH labels file" when its own list of
    sources fell behind the pipeline's; it now copies the data/raw deps dvc.yaml lists."""
    from bench.workspace import raw_sources
    from stages import merge

    assert {str(merge.KERMANY.parent), str(merge.COVID), str(merge.NIH), str(merge.HANNOVER)} \
        <= set(raw_sources(ROOT))
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  merge: {cmd: x, deps: [stages/merge.py, data/raw/one, data/raw/two/sub]}\n"
        "  external: {cmd: y, deps: [data/raw]}\n"
        "  train: {foreach: [a], do: {cmd: z, deps: [data/raw/three]}}\n"
        "  plots: {cmd: w}\n")
    assert raw_sources(tmp_path) == ["data/raw/one", "data/raw/three"]


def test_selection_without_experiments_says_so_in_one_line(monkeypatch):
    """A clone without the experiments of --rev: dvc exp show lists the base commit alone (and
    no State column); a revision git does not know: dvc exp show fails."""
    import subprocess

    from bench import selection

    def exp_show(stdout="", returncode=0, stderr=""):
        def run(args, **kwargs):
            return subprocess.CompletedProcess(args, returncode, stdout, stderr)
        monkeypatch.setattr(selection.subprocess, "run", run)

    exp_show("Experiment,rev,typ,Created,parent\n,workspace,baseline,,\n"
             ",af13f3d,baseline,2026-11-26T13:53:30,\n")
    monkeypatch.setattr(sys, "argv", ["selection", "--rev", "af13f3d", "--shortcut", "binary"])
    with pytest.raises(SystemExit, match=r"^error: no experiments on af13f3d in this clone"):
        selection.main()
    exp_show(returncode=1, stderr="ERROR: failed to show experiments - unknown Git revision 'x'")
    monkeypatch.setattr(sys, "argv", ["selection", "--rev", "x"])
    with pytest.raises(SystemExit, match=r"dvc exp show --rev x failed: .*unknown Git revision"):
        selection.main()


def test_the_ood_grids_validation_probes_are_the_validation_xrays_turned_flipped_and_zoomed():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    images[:, 0] = 255  # a bright top row
    probes = ood_grid.validation_probes(images)
    assert {name: p.shape for name, p in probes.items()} == dict.fromkeys(probes, images.shape)
    assert probes["upside down"][:, -1].min() == 255 and probes["upside down"][:, 0].max() == 0
    assert probes["turned a quarter"][:, :, 0].min() == 255  # the top row is now a side
    assert probes["zoomed 2x"].max() == 0  # the middle half holds no bright row


def test_the_ood_grid_flags_the_shares_above_the_validation_threshold():
    rng = np.random.default_rng(0)
    maps = {"train": rng.normal(5, 1, (40, 2, 2, 4)), "val": rng.normal(5, 1, (100, 2, 2, 4))}
    flipped = {"far": -rng.normal(5, 1, (10, 2, 2, 4))}
    shares = ood_grid.shares_flagged(maps, flipped, Ood(neighbours=3, keep=0.9, grid=2))
    assert shares["val"] == pytest.approx(0.1, abs=0.01) and shares["far"] == 1.0
