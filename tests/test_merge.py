import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from covidxray.config.layouts import DATA_REPORT_KEYS
from covidxray.config.params import load_params
from covidxray.data import folders, sources
from covidxray.errors import PipelineError
from covidxray.paths import DETAIL, MANIFEST, SPLIT_DIR
from stages import merge, split
from tests.conftest import (ROOT, hannover_layout, params_with, with_june, write_image,
                            write_params)

NOT_UTF8 = os.fsdecode(b"x\xff")  # a name of raw bytes, as a file system may hold
CLINIC = Path("data/raw/clinic")
# a training source of your own: patient p1 has images of both classes, p2, p4, p5, p7 one each
CLINIC_IMAGES = {"covid": ["p1_1.png", "p1_2.png", "p2_1.png", "p3_1.png", "p3_2.png", "p4_1.png"],
                 "healthy": ["p1_3.png", "p5_1.png", "p6_1.png", "p6_2.png", "p7_1.png"]}
CLINIC_SOURCE = {"layout": "folders", "path": str(CLINIC), "patient": r"^(p\d+)_",
                 "findings": {"covid": "covid", "healthy": "normal"}, "age_group": "adult",
                 "per_class": {"covid": 6, "normal": 5}}
# root without the capabilities that let it read any file: a user's view of file modes
UNPRIVILEGED = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all")


@pytest.mark.parametrize("folder, name, expected", [
    ("NORMAL", "IM-0408-0001.jpeg", ("normal", "IM-0408")),
    ("NORMAL", "NORMAL2-IM-1247-0001.jpeg", ("normal", "NORMAL2-IM-1247")),
    ("NORMAL", "IM-0501-0001-0002.jpeg", ("normal", "IM-0501")),
    ("PNEUMONIA", "person1312_bacteria_3317.jpeg", ("bacterial", "person1312")),
    ("PNEUMONIA", "person1_virus_6.jpeg", ("viral", "person1")),
    ("PNEUMONIA", "person1_fungus_6.jpeg", None),
    ("PNEUMONIA", "IM-0408-0001.jpeg", None),
    ("NORMAL", "notes.txt", None),
])
def test_kermany_label_reads_class_and_patient_from_the_name(folder, name, expected):
    assert sources.kermany_label(folder, name) == expected


def read_outputs():
    return pd.read_csv(MANIFEST), json.loads((DETAIL / "data.json").read_text())


def test_merge_labels_every_source_and_records_patients(sources):
    merge.main()
    manifest, report = read_outputs()
    assert manifest.groupby(["source", "class"]).size().to_dict() == {
        ("kermany", "bacterial"): 4, ("covid-chestxray", "covid"): 4, ("kermany", "normal"): 4,
        ("kermany", "viral"): 4, ("nih", "normal"): 4, ("nih", "pneumonia_other"): 4}
    assert set(manifest.columns) == {"path", "class", "patient", "source", "age_group", "site",
                                     "sha256", "width", "height"}
    row = manifest.set_index("path").loc[str(sources["covid"] / "images" / "covid-2.png")]
    assert (row["class"], row["patient"], row["source"]) == ("covid", "covid:2", "covid-chestxray")
    assert (row["width"], row["height"]) == (40, 32)
    assert "kermany:person1" in set(manifest["patient"]) and "nih:201" in set(manifest["patient"])
    assert manifest.groupby("source")["age_group"].unique().map(list).to_dict() == {
        "kermany": ["child"], "covid-chestxray": ["adult"], "nih": ["adult"]}
    assert list(manifest["source"].iloc[16:]) == ["nih"] * 8  # after the tutorial's rows
    assert report["n_skipped"] == 0 and report["total"] == 24


def test_bad_files_are_skipped_with_a_reason(sources):
    normal = sources["kermany"] / "NORMAL"
    (normal / "IM-0900-0001.jpeg").write_bytes(b"")  # zero bytes
    (normal / "IM-0901-0001.jpeg").write_bytes(b"plain text, not an image")
    truncated = (normal / "IM-0100-0001.jpeg").read_bytes()
    (normal / "IM-0902-0001.jpeg").write_bytes(truncated[: len(truncated) // 2])
    (normal / "notes.txt").write_text("a stray file")
    with open(sources["covid"] / "metadata.csv", "a") as meta:
        meta.write("7,0,M,70,COVID-19,,PA,X-ray,2020,,not-mirrored.png\n")
    merge.main()
    manifest, report = read_outputs()
    reasons = {item["path"].rsplit("/", 1)[1]: item["reason"] for item in report["skipped"]}
    assert set(reasons) == {"IM-0900-0001.jpeg", "IM-0901-0001.jpeg", "IM-0902-0001.jpeg",
                            "notes.txt", "not-mirrored.png"}
    assert reasons["IM-0902-0001.jpeg"].startswith("not a readable image")
    assert reasons["notes.txt"] == "file name gives no class/patient"
    assert reasons["not-mirrored.png"] == "listed in metadata.csv line 7, file missing"
    assert not manifest["path"].str.contains("IM-09").any()


def test_grayscale_rgba_and_16_bit_images_are_kept(sources):
    normal = sources["kermany"] / "NORMAL"
    for i, mode in enumerate(("RGBA", "I;16", "LA")):
        write_image(normal / f"IM-080{i}-0001.png", seed=500 + i, mode=mode)
    write_params(merge={"per_class": {"normal": 7, "bacterial": 4, "viral": 4, "covid": 4}})
    merge.main()
    manifest, report = read_outputs()
    assert report["n_skipped"] == 0
    assert (manifest.query("source == 'kermany'")["class"] == "normal").sum() == 7


@pytest.mark.parametrize("copy, conflict", [
    ("person1_bacteria_9.jpeg", {}),
    # the same bytes filed as viral: dropped as a copy, the conflict recorded (it was dropped
    # as a plain duplicate)
    ("person7_virus_9.jpeg",
     {"conflict": "labelled viral here, bacterial there: the image keeps that label"}),
])
def test_byte_identical_copies_are_kept_once_and_reported(sources, copy, conflict):
    bacteria = sources["kermany"] / "PNEUMONIA"
    shutil.copy(bacteria / "person1_bacteria_1.jpeg", bacteria / copy)
    merge.main()
    manifest, report = read_outputs()
    assert report["duplicates"] == [{"path": str(bacteria / copy),
                                     "duplicate_of": str(bacteria / "person1_bacteria_1.jpeg"),
                                     **conflict}]
    assert manifest["sha256"].is_unique


def test_a_fifo_named_like_an_image_is_a_recorded_skip_and_does_not_hang(sources):
    fifo = sources["kermany"] / "PNEUMONIA" / "person9_bacteria_9.jpeg"
    os.mkfifo(fifo)
    merge.main()
    skipped = read_outputs()[1]["skipped"]
    assert {"path": str(fifo), "reason": "not a regular file (a FIFO, device or socket); only"
            " files are read as images"} in skipped


def test_sampling_is_seeded_and_records_shortfalls(sources, capsys):
    write_params(merge={"per_class": {"normal": 2, "bacterial": 3, "viral": 4, "covid": 9}})
    merge.main()
    assert ("warning: merge: kermany/covid covid: 9 asked for, 4 available (an empty or missing"
            " class folder?); metrics/detail/data.json records it") in capsys.readouterr().err
    first, report = read_outputs()
    assert report["classes"]["covid"] == {"available": 4, "requested": 9, "selected": 4}
    assert report["classes"]["normal"] == {"available": 4, "requested": 2, "selected": 2}
    merge.main()
    assert read_outputs()[0].equals(first)
    write_params(seed=7, merge={"per_class": {"normal": 2, "bacterial": 3, "viral": 4, "covid": 9}})
    merge.main()
    assert not read_outputs()[0].equals(first)


def test_metadata_without_a_needed_column_is_a_clear_error(sources):
    meta = sources["covid"] / "metadata.csv"
    meta.write_text(meta.read_text().replace("modality", "kind"))
    with pytest.raises(PipelineError, match=r"metadata\.csv: missing column\(s\) modality"):
        merge.main()


@pytest.mark.parametrize("section, value, message", [
    ("hannover", {"per_class": {"covid": 2}}, "merge.hannover.views is missing"),
    ("nih", {"views": ["PA"], "ages": [18, 120], "per_class": {"normal": 2}},
     "merge.nih.findings is missing"),
    ("nih", {"findings": {"No Finding": "normal"}, "views": ["PA"], "per_class": {"normal": 2}},
     "merge.nih.ages is missing"),
    ("covid", {"finding": "COVID-19", "views": ["PA"]}, "merge.covid.modality is missing"),
    ("covid", {"finding": "COVID-19", "modality": "X-ray"}, "merge.covid.views is missing"),
    ("hannover", {"views": ["AP"], "ages": [18, 120], "per_class": {"covid": 2}},
     "merge.hannover.ages is not a known key"),
])
def test_a_source_section_without_its_keys_is_a_clear_error(sources, section, value, message):
    write_params(merge={section: value})
    with pytest.raises(PipelineError, match=message):
        merge.main()
    assert not Path("data/merged/manifest.csv").exists()


def test_unknown_class_in_params_is_a_clear_error(sources):
    write_params(merge={"per_class": {"normal": 2, "fungal": 2}})
    with pytest.raises(PipelineError, match="merge.per_class.fungal is not one of normal,"
                                            " bacterial, viral, covid, pneumonia_other"):
        merge.main()
    assert not Path("data/merged/manifest.csv").exists()


def test_missing_kermany_split_folder_is_a_clear_error(sources):
    write_params(merge={"kermany_splits": ["train", "test"]})
    with pytest.raises(PipelineError, match="chest_xray/test/NORMAL: missing"):
        merge.main()


def test_an_empty_metadata_file_is_a_clear_error(sources):
    (sources["covid"] / "metadata.csv").write_text("")
    with pytest.raises(PipelineError, match=r"metadata\.csv: cannot read"):
        merge.main()


@pytest.mark.parametrize("per_class, message", [
    ({"normal": -1, "covid": 2}, "merge.per_class.normal must be a whole number >= 0, got -1"),
    ({"normal": 2, "covid": 2.5}, "merge.per_class.covid must be a whole number >= 0, got 2.5"),
])
def test_a_negative_or_fractional_class_count_is_a_clear_error(sources, per_class, message):
    write_params(merge={"per_class": per_class})
    with pytest.raises(PipelineError, match=re.escape(f"params.yaml: {message}")):
        merge.main()


def test_a_path_that_is_not_utf8_is_a_recorded_skip_and_the_manifest_stays_utf8(sources):
    normal = write_image(sources["kermany"] / "NORMAL" / f"IM-0990-0001{NOT_UTF8}.jpeg", 990)
    nih = sources["nih"] / NOT_UTF8 / "images" / "00000100_000.png"  # NIH's rows name the file
    nih.parent.mkdir(parents=True)
    (sources["nih"] / "images" / nih.name).rename(nih)
    merge.main()
    manifest = MANIFEST.read_bytes().decode("utf-8")  # raises if any byte is not UTF-8
    report = json.loads((DETAIL / "data.json").read_text())
    reason = "file or folder name is not valid UTF-8; rename it"
    assert report["skipped"] == [{"path": str(path).replace(NOT_UTF8, "x\\xff"), "reason": reason}
                                 for path in (normal, nih)]
    assert "00000100_000.png" not in manifest and report["total"] == 23


def test_a_table_with_a_byte_order_mark_gives_the_same_manifest(sources):
    hannover_layout(sources["hannover"], [("p1", "a1", "ap"), ("p2", "a2", "pa")])
    write_params(merge={"per_class": {"normal": 4, "bacterial": 4, "viral": 4, "covid": 4},
                        "hannover": {"views": ["AP", "PA"], "per_class": {"covid": 2}}})
    merge.main()
    without = MANIFEST.read_bytes()
    for table in (sources["covid"] / "metadata.csv", sources["nih"] / "Data_Entry_2017.csv",
                  sources["hannover"] / "data.csv"):  # Excel's "CSV UTF-8" begins with one
        table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    merge.main()
    assert MANIFEST.read_bytes() == without and b"hannover" in without


def unprivileged(*command):
    """A command run as root without the capabilities that override file modes."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is missing: cannot run as a user that file modes stop")
    return subprocess.run([*UNPRIVILEGED, *map(str, command)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def locked():
    """chmod 000 a folder, skip if that does not keep an unprivileged user out, and give the
    folder its mode back afterwards so that tmp_path can be removed."""
    folders = []

    def lock(folder):
        folders.append((folder, folder.stat().st_mode))
        folder.chmod(0)
        if unprivileged(sys.executable, "-c", "import os, sys; os.listdir(sys.argv[1])",
                        folder).returncode == 0:
            pytest.skip("a mode-000 folder is still readable without root's capabilities")
        return folder

    yield lock
    for folder, mode in folders:
        folder.chmod(mode)


@pytest.mark.slow
@pytest.mark.parametrize("folder", [
    "chest-xray-pneumonia/chest_xray/train/PNEUMONIA",  # a class of the Kaggle set
    "chest-xray-pneumonia/chest_xray",  # a folder on the way to the classes
    "covid-chestxray-dataset/images",
    "nih-chestxray14/images",  # was 8 rows "file missing", and exit 0
    "nih-chestxray14",
    "hannover-covid-19/png",
])
def test_an_unreadable_source_folder_stops_merge_naming_it(sources, locked, folder):
    hannover_layout(sources["hannover"], [("p1", "a1", "ap")])
    write_params(merge={"hannover": {"views": ["AP"], "per_class": {"covid": 1}}})
    folder = locked(Path("data/raw", folder))
    run = unprivileged(sys.executable, "-m", "stages.merge")
    assert run.returncode == 1 and run.stderr == (
        f"error: {folder}: permission denied, cannot read this folder of the source; let the"
        f" user who runs the pipeline read it (e.g. `chmod -R a+rX {folder}`)\n")
    assert not MANIFEST.exists()


def write_clinic():
    for seed, (folder, name) in enumerate((folder, name) for folder, names in
                                          CLINIC_IMAGES.items() for name in names):
        write_image(CLINIC / folder / name, 850 + seed)


def test_a_training_source_of_your_own_comes_last_and_leaves_the_rows_before_it_alone(sources):
    merge.main()
    before = MANIFEST.read_text()
    write_clinic()
    write_params(merge={"sources": with_june(clinic={**CLINIC_SOURCE,
                                                     "per_class": {"covid": 4, "normal": 9}})})
    merge.main()
    manifest, report = read_outputs()
    assert MANIFEST.read_text().startswith(before)  # the same rows, drawn by the same draws
    clinic = manifest.iloc[before.count("\n") - 1:]
    assert set(clinic["source"]) == {"clinic"} and set(clinic["age_group"]) == {"adult"}
    assert clinic["class"].value_counts().to_dict() == {"normal": 5, "covid": 4}
    assert set(clinic["patient"]) <= {f"clinic:p{i}" for i in range(1, 8)}
    assert report["clinic"] == {"covid": {"available": 6, "requested": 4, "selected": 4},
                                "normal": {"available": 5, "requested": 9, "selected": 5}}
    assert set(report) == {*DATA_REPORT_KEYS, "nih", "hannover", *with_june(), "clinic"}


def test_a_missing_source_folder_is_named_itself_not_as_its_first_class_folder(sources):
    """merge run alone (check, which refuses the missing path first, left out): the root is what
    is missing; a class folder missing inside a root that is there is named as before."""
    write_params(merge={"sources": with_june(clinic=CLINIC_SOURCE)})
    with pytest.raises(PipelineError, match=f"^{re.escape(str(CLINIC))}: missing \\(the folder"
                                            " that merge.sources.clinic.findings names 'covid'"
                                            " in\\)$"):
        merge.main()
    write_image(CLINIC / "healthy" / "p1_a.png", 850)
    with pytest.raises(PipelineError, match=f"^{re.escape(str(CLINIC / 'covid'))}: missing"
                                            " \\(merge.sources.clinic.findings names 'covid'\\)$"):
        merge.main()


def test_a_source_of_your_own_is_split_by_whole_patients(sources):
    write_clinic()
    write_params(merge={"sources": with_june(clinic=CLINIC_SOURCE)},
                 split={"test_per_class": 1, "val_fraction": 0.5, "separately": ["clinic"],
                        "test_per_class_by_source": {}})
    merge.main()
    split.main()
    parts = {name: pd.read_csv(SPLIT_DIR / f"{name}.csv") for name in ("train", "val", "test")}
    where = pd.concat([rows.assign(part=name) for name, rows in parts.items()])
    clinic = where[where["source"] == "clinic"]
    assert len(clinic) == 11 and set(clinic["part"]) == {"train", "val", "test"}
    assert (where.groupby("patient")["part"].nunique() == 1).all()


@pytest.mark.parametrize("changes, message", [
    ({"merge.sources.clinic": {**CLINIC_SOURCE, "layout": "kaggle"}},
     "merge.sources.clinic.layout must be one of folders, table, covid, got 'kaggle'"),
    ({"merge.sources.clinic": {k: v for k, v in CLINIC_SOURCE.items() if k != "per_class"}},
     "merge.sources.clinic.per_class is missing"),
    ({"merge.sources.hannover": CLINIC_SOURCE},
     "merge.sources.hannover names source 'hannover', which merge.hannover already reads; rename"
     " it (or set its `source`), or leave one of them out"),
    ({"merge.sources.clinic": {**CLINIC_SOURCE, "source": "kermany"}},
     "merge.sources.clinic names source 'kermany', which merge.kermany_splits already reads;"
     " rename it (or set its `source`), or leave one of them out"),
    ({"merge.sources.clinic": CLINIC_SOURCE, "merge.sources.ward": {**CLINIC_SOURCE,
                                                                     "source": "clinic"}},
     "merge.sources.ward names source 'clinic', which merge.sources.clinic already reads;"
     " rename it (or set its `source`), or leave one of them out"),
    ({"merge.sources.total": CLINIC_SOURCE}, "merge.sources.total: 'total' is a key of"
     " metrics/detail/data.json's own; give the set another name"),
])
def test_a_source_of_your_own_that_another_part_of_merge_reads_is_refused(tmp_path, changes,
                                                                          message):
    with pytest.raises(PipelineError, match=f"^{re.escape(f'params.yaml: {message}')}$"):
        load_params(params_with(tmp_path, changes))


def test_hannover_through_the_table_layout_gives_the_same_manifest(sources):
    hannover_layout(sources["hannover"], [("p1", "a1", "ap"), ("p2", "a2", "pa"),
                                          ("p1", "a3", "ap")])
    spec = {"views": ["AP", "PA"], "per_class": {"covid": 2}}
    write_params(merge={"hannover": spec})
    merge.main()
    built_in = MANIFEST.read_bytes(), (DETAIL / "data.json").read_bytes()
    data = pd.read_csv(sources["hannover"] / "data.csv", dtype=str, keep_default_na=False)
    data.assign(path="png/" + data.image_id + ".png", label="covid").to_csv(
        "data/raw/hannover-table.csv", index=False)
    params = write_params(merge={"sources": with_june(hannover={
        "layout": "table", "path": "data/raw/hannover-table.csv",
        "images": str(sources["hannover"]), "findings": {"covid": "covid"},
        "columns": {"path": "path", "label": "label", "patient": "patient_id"},
        "age_group": "adult", "per_class": spec["per_class"]})})
    del params["merge"]["hannover"]
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    merge.main()
    assert (MANIFEST.read_bytes(), (DETAIL / "data.json").read_bytes()) == built_in


@pytest.mark.slow
def test_dvc_rehashes_an_unreadable_source_and_the_documented_recovery_restores_it(tmp_path,
                                                                                   locked):
    """DVC 3 hashes a `dvc add`-ed source without the folder it cannot read and rewrites its
    .dvc file before any stage runs (upstream behaviour the project cannot stop); merge then
    stops naming the folder. docs/troubleshooting.md's recovery (give read permission back,
    `git checkout` the .dvc file) leaves every file and `dvc status` as they were."""
    def run(*command, user=()):
        done = subprocess.run([*user, *command], cwd=tmp_path, capture_output=True, text=True)
        return done.returncode, done.stdout + done.stderr

    dvc, git = (sys.executable, "-m", "dvc"), ("git", "-c", "user.name=t", "-c", "user.email=t@t")
    images = tmp_path / "data/raw/src/images"
    images.mkdir(parents=True)
    for name in "abc":
        (images / f"{name}.png").write_text(name)
    # a stage that, like merge, writes its output whole or not at all
    (tmp_path / "dvc.yaml").write_text("stages:\n  merge:\n    cmd: ls -R data/raw/src > part &&"
                                       " mv part out\n    deps: [data/raw/src]\n"
                                       "    outs: [out]\n")
    for command in (("git", "init", "-q"), (*dvc, "init", "-q"),
                    (*dvc, "add", "-q", "data/raw/src"), (*dvc, "repro", "-q"), (*git, "add", "-A"),
                    (*git, "commit", "-qm", "run")):
        assert run(*command)[0] == 0, command
    tracked = (tmp_path / "data/raw/src.dvc").read_text()
    locked(images)
    assert run(*dvc, "repro", user=UNPRIVILEGED)[0] != 0
    assert (tmp_path / "data/raw/src.dvc").read_text() != tracked  # DVC rewrote it: nfiles 0
    images.chmod(0o755)  # the recovery, as the docs give it
    assert run("git", "checkout", "data/raw/src.dvc")[0] == 0
    assert run(*dvc, "checkout")[0] == 0
    assert sorted(p.name for p in images.iterdir()) == ["a.png", "b.png", "c.png"]
    assert "up to date" in run(*dvc, "status")[1]


def test_an_unreadable_folder_of_a_dvc_tracked_source_says_how_to_undo_dvcs_rehash(tmp_path,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    images = Path("data/raw/covid-chestxray-dataset/images")
    images.mkdir(parents=True)
    err = PermissionError(13, "Permission denied")
    plain = str(folders.unreadable(images, err))
    assert plain.endswith(f"(e.g. `chmod -R a+rX {images}`)")  # no .dvc file: nothing more
    Path("data/raw/covid-chestxray-dataset.dvc").write_text("outs: []\n")
    assert str(folders.unreadable(images, err)) == (
        plain + "; then `git checkout data/raw/covid-chestxray-dataset.dvc` if git shows it"
        " changed (DVC re-hashed the source without that folder), before any `dvc checkout`")
