"""`covidxray verify`: a rebuild's metrics against a commit's, within the repeat spread's
tolerances."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from covidxray.app import command, verify
from tests.conftest import ROOT

SD = 0.05  # binary's test accuracy over 5 splits: one split's value may move by 2 * SD
LOCK = """schema: '2.0'
stages:
  split: {cmd: s, outs: [{path: data/split, md5: aaa.dir}]}
  features: {cmd: f, outs: [{path: data/features, md5: %s.dir}]}
"""


def spread(mean, sd):
    return {"mean": mean, "sd": sd, "min": mean - sd, "max": mean + sd, "values": [mean] * 5}


def git(folder, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          cwd=folder, check=True, capture_output=True, text=True).stdout


def write(folder, name, data):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository whose commit holds a task's headline, its repeat spread, data counts
    and a dvc.lock; the workspace starts as committed."""
    git(tmp_path, "init", "-q")
    write(tmp_path, "README", "before the pipeline\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "no metrics yet")
    write(tmp_path, "metrics/binary.json", {"accuracy": 0.9, "covid_recall": 0.8})
    write(tmp_path, "metrics/detail/repeat.json", {"binary": {
        "head": {"test": {"accuracy": spread(0.85, SD), "per_class": {"covid": {
            "recall": spread(0.8, 0.1)}}}},
        "splits": 5}})
    write(tmp_path, "metrics/detail/data.json", {"total": 619, "skipped": [{"path": "x"}]})
    write(tmp_path, "dvc.lock", LOCK % "bbb")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "a run")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys, *args):
    """covidxray verify's exit status and its output."""
    status = command.main(["verify", *args])
    out = capsys.readouterr()
    return status, out.out + out.err


def test_an_unchanged_workspace_is_the_same(repo, capsys):
    status, out = run(capsys)
    assert status == 0
    assert out.splitlines()[-1] == ("same within tolerance: 12 metrics compared, 12 identical,"
                                    " 0 moved within tolerance")
    assert "binary: accuracy 0.0447 / 0.1, covid recall 0.0894 / 0.2" in out
    assert "outputs byte-identical with HEAD: 2 (data/features, data/split)" in out
    # what the tolerance can catch, and the section that says more (heading there as linked)
    said = re.search(r"^so it catches .* cannot tell one split's value .*"
                     r"\(docs/([\w.]+)#([\w-]+)\)$", out, re.M)
    assert said, out
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs" / said[1]).read_text(), re.M)
    assert said[2] in {h.lower().replace(" ", "-") for h in headings}


def test_a_move_within_the_tolerance_is_the_same(repo, capsys):
    write(repo, "metrics/binary.json", {"accuracy": 0.98, "covid_recall": 0.7})
    write(repo, "dvc.lock", LOCK % "ccc")  # other features, as on another CPU
    status, out = run(capsys)
    assert status == 0
    assert out.splitlines()[-1] == (
        "same within tolerance: 12 metrics compared, 10 identical, 2 moved within tolerance"
        " (largest: metrics/binary.json accuracy 0.9 -> 0.98, tolerance 0.1)")
    assert "outputs byte-identical with HEAD: 1 (data/split)" in out
    assert "outputs that differ: 1 (data/features)" in out


def test_a_move_past_the_tolerance_names_file_key_and_both_values(repo, capsys):
    write(repo, "metrics/binary.json", {"accuracy": 0.75, "covid_recall": 0.8})
    write(repo, "metrics/detail/data.json", {"total": 618, "skipped": [{"path": "x"}]})
    status, out = run(capsys)
    assert status == 1
    lines = out.splitlines()
    assert "metrics/binary.json accuracy: committed 0.9, workspace 0.75, tolerance 0.1" in lines
    assert "metrics/detail/data.json total: committed 619, workspace 618, tolerance 0" in lines
    assert lines[-1] == ("not the same: 2 of 12 metrics moved past their tolerance, 0 files or"
                         " keys on one side only (compared with HEAD)")


def test_a_file_or_key_on_one_side_only_is_named(repo, capsys):
    (repo / "metrics" / "detail" / "data.json").unlink()
    write(repo, "metrics/binary.json", {"accuracy": 0.9, "covid_recall": None})
    write(repo, "metrics/detail/new.json", {"n": 1})
    status, out = run(capsys, "--rev", "HEAD")
    assert status == 1
    lines = out.splitlines()
    assert "metrics/detail/data.json: not in the workspace" in lines
    assert "metrics/detail/new.json: not at HEAD" in lines
    assert "metrics/binary.json covid_recall: committed 0.8, workspace none" in lines


@pytest.mark.parametrize("rev, message", [
    ("nosuch", "error: nosuch: no such revision here"),
    ("HEAD~1", "error: HEAD~1 has no metrics/*.json"),
])
def test_a_revision_that_is_not_there_or_has_no_metrics_is_one_line(repo, capsys, rev, message):
    status, out = run(capsys, "--rev", rev)
    assert status == 2
    assert out.startswith(message) and out.count("\n") == 1


def test_each_metric_takes_the_spread_of_the_entries_that_match_it_most():
    """2*sd of the entries whose key ends with the longest tail of the metric's, over sqrt(N)
    for a mean of N splits; at least two test images of a class (step)."""
    def entry(sd):
        return (sd, 4)  # sd over 4 splits: a mean's tolerance is sd

    spreads = {"binary": {("head", "test", "accuracy"): entry(0.02),
                          ("reference", "test", "accuracy"): entry(0.03),
                          ("head", "val", "accuracy"): entry(0.05),
                          ("head", "test", "per_class", "covid", "recall"): entry(0.04),
                          ("head", "test", "per_class", "normal", "recall"): entry(0.2),
                          ("head", "test", "by_source", "groups", "g", "called_covid"): entry(0.1)},
               "holdout": {("left_out", "a", "test", "recall"): entry(0.06),
                           ("left_out", "a", "val", "recall"): entry(0.3),
                           ("left_out", "a", "test", "within_source", "auc"): entry(0.07)},
               "every task": {("head", "test", "auc"): entry(0.09),
                              ("head", "test", "accuracy"): entry(0.09)}}

    def allowed(path, key, value=0.5, holder=None, data=None, step=0.0):
        return verify.metric_tolerance(Path(path), tuple(key.split(".")), value, holder or {},
                                       data or {}, spreads, step)

    assert allowed("metrics/binary.json", "accuracy") == 0.06  # test's, head or reference
    assert allowed("metrics/binary.json", "accuracy", step=0.2) == 0.2  # two images at least
    assert allowed("metrics/binary.json", "covid_recall") == 0.08  # not normal's recall
    assert allowed("metrics/binary.json", "ci95_low") == 0.06  # accuracy's interval
    assert allowed("metrics/detail/binary.json", "test.accuracy_ci95.1") == 0.06
    assert allowed("metrics/detail/binary.json", "val.accuracy") == 0.1
    assert allowed("metrics/detail/external/nih_adults/binary.json", "mean_p") == 0.1  # fallback
    assert allowed("metrics/detail/external/binary/nih_adults.json", "mean_p") == 0.1
    assert allowed("metrics/detail/repeat.json", "binary.head.test.accuracy.mean") == 0.02
    assert allowed("metrics/detail/repeat.json", "binary.head.test.accuracy.mean",
                   step=0.2) == 0.05  # two images in one of the 4 splits
    assert allowed("metrics/detail/repeat.json", "binary.head.test.accuracy.max") == 0.04
    assert allowed("metrics/detail/binary.json", "test.by_source.groups.g.recall", 0.5,
                   {"n": 2}, step=0.2) == 1.0  # two of the group's two images
    assert allowed("metrics/detail/holdout.json", "left_out.a.test.recall.max") == 0.12  # a split
    assert allowed("metrics/detail/binary.json", "test.correct", 17,
                   {"n": 18}) == pytest.approx(2)  # 0.06 of 18, but two images at least
    assert allowed("metrics/detail/binary.json", "test.confusion_matrix.0.1", 1,
                   {"n": 40}) == pytest.approx(0.06 * 40)
    assert allowed("metrics/detail/binary.json", "test.n", 18, {"n": 18}) == 0  # images: exact
    assert allowed("metrics/detail/confound.json", "models.binary.other.called_covid", 17,
                   {"n": 18}) == pytest.approx(0.2 * 18)
    assert allowed("metrics/detail/confound.json", "models.binary.other.share") == 0.2
    assert allowed("metrics/detail/confound.json", "manifest.auc") == 0.18  # a probe: all tasks
    assert allowed("metrics/detail/controls.json", "probe.full.covid_recall",
                   data={"task": "binary"}) == 0.08
    assert allowed("metrics/holdout.json", "covid_recall") == 0.06  # means: test recall's
    assert allowed("metrics/detail/holdout.json", "verdict.within_source_auc") == 0.07
    assert allowed("metrics/detail/holdout.json", "curve.0.fraction") == 0  # no entry: exact
    assert allowed("metrics/detail/data.json", "classes.covid.available", 68.0) == 0
    # ood's reference serves every task: a share takes the widest, its count that times n,
    # at least two images of the set
    assert allowed("metrics/detail/ood.json", "sets.photos.share_flagged", 0.9, {"n": 20}) == 0.18
    assert allowed("metrics/detail/ood.json", "sets.photos.flagged", 18,
                   {"n": 20}) == pytest.approx(0.18 * 20)
    assert allowed("metrics/detail/ood.json", "sets.val.n", 108, {"n": 108}) == 0


def test_loss_precision_and_f1_are_left_out_as_the_docstring_says():
    scores = {"test": {"loss": 0.3, "per_class": {"covid": {"precision": 1.0, "f1": 0.5,
                                                            "recall": 0.4, "support": 9}}}}
    rows = verify.compare_file(Path("metrics/detail/binary.json"), scores, scores, {}, 0.0)
    assert [row[0] for row in rows] == ["test.per_class.covid.recall",
                                        "test.per_class.covid.support"]
    ood = {"threshold": 0.014, "sets": {"val": {"median_distance": 0.008, "flagged": 2}}}
    rows = verify.compare_file(Path("metrics/detail/ood.json"), ood, ood, {}, 0.0)
    assert [row[0] for row in rows] == ["sets.val.flagged"]  # distances differ by CPU


def test_a_backbone_run_in_another_precision_is_named(repo, capsys):
    """`auto` picked float32 on one machine and mixed_bfloat16 on another: say so, since that
    moves the models further than another CPU's kernels alone."""
    write(repo, "metrics/detail/binary.json", {"precision": "float32", "test": {"n": 36}})
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "with the precision")
    status, out = run(capsys)
    assert "ran in" not in out
    write(repo, "metrics/detail/binary.json", {"precision": "mixed_bfloat16", "test": {"n": 36}})
    status, out = run(capsys)
    assert status == 0
    assert ("metrics/detail/binary.json: the backbone ran in float32 at HEAD and in"
            " mixed_bfloat16 here (backbone.precision auto picks it per machine") in out
