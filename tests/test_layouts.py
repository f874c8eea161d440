"""Your own data through the real `dvc repro`, in a temporary copy of the repository on the tiny
config: the generic layouts (`folders`, `table`) as training sources and as external sets, and
the README's Hannover re-expressed through `table`, which must give the same manifest."""

import json
import re
import shutil
import sys

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, write_image
from tests.test_pipeline import dvc, run, tiny_repository

pytestmark = pytest.mark.slow  # dvc repro in a copy of the repository
CLINIC = {"covid": ["p1_1.png", "p1_2.png", "p2_1.png", "p3_1.png", "p3_2.png", "p4_1.png"],
          "healthy": ["p1_3.png", "p5_1.png", "p6_1.png", "p6_2.png", "p7_1.png"]}
WARD_TABLE = ("file,finding,pid,site\n"
              "a.png,COVID-19,w1,ward-a\n"     # 2: kept
              "b.png,normal,w2,ward-a\n"       # 3: kept
              "c.png,normal,w3,ward-b\n"       # 4: another site, not a candidate
              "gone.png,normal,w4,ward-a\n"    # 5: no such file
              "a.png,normal,,ward-a\n"         # 6: no patient
              "b.png,normal\n")                # 7: two fields


def readme_block(language, holding):
    """The README's fenced block in `language` that holds `holding`: the test runs what the
    README shows."""
    blocks = re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    [block] = [b for b in blocks if holding in b]
    return block


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The repository with the tiny sources, made once; each test works on a copy."""
    project, _, _ = tiny_repository(tmp_path_factory, "tiny")
    return project


@pytest.fixture
def project(tiny, tmp_path):
    shutil.copytree(tiny, tmp_path / "project", symlinks=True)
    return tmp_path / "project"


def edit_params(project, edit):
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def outputs(project):
    return tuple((project / name).read_bytes()
                 for name in ("data/merged/manifest.csv", "metrics/detail/data.json"))


def test_hannover_through_the_table_layout_gives_the_same_manifest_as_the_built_in_reader(
        project):
    dvc(project, "repro", "merge")
    built_in = outputs(project)
    run(project, sys.executable, "-c", readme_block("python", "hannover-table.csv"))
    own = yaml.safe_load(readme_block("yaml", "layout: table"))["merge"]["sources"]

    def through_table(params):
        hannover = params["merge"].pop("hannover")
        params["merge"]["sources"]["hannover"] = {**own["hannover"],
                                                  "per_class": hannover["per_class"]}

    edit_params(project, through_table)
    assert "Running stage 'merge'" in dvc(project, "repro", "merge")
    assert outputs(project) == built_in


def test_sets_of_your_own_go_through_merge_split_and_external(project):
    raw = project / "data" / "raw"
    seeds = iter(range(900, 1000))
    for folder, names in CLINIC.items():
        for name in names:
            write_image(raw / "clinic" / folder / name, next(seeds))
    write_image(raw / "clinic" / "covid" / "scan.png", next(seeds))  # no patient in its name
    (raw / "clinic" / "healthy" / "p8_1.png").write_text("not an image")
    for name in ("a.png", "b.png", "c.png"):
        write_image(raw / "ward" / name, next(seeds))
    (raw / "ward" / "labels.csv").write_text(WARD_TABLE)
    write_image(raw / "clinic-later" / "healthy" / "p9_1.png", next(seeds))
    write_image(raw / "clinic-later" / "healthy" / "p5_2.png", next(seeds))  # a manifest patient
    clinic = {"layout": "folders", "path": "data/raw/clinic", "patient": r"^(p\d+)_",
              "findings": {"covid": "covid", "healthy": "normal"}, "age_group": "adult"}

    def add_sets(params):
        params["merge"]["sources"]["clinic"] = {**clinic, "per_class": {"covid": 6,
                                                                        "normal": 5}}
        params["split"]["separately"].append("clinic")
        params["tasks"]["adult_covid"]["sources"].append("clinic")
        params["external"].update({
            "clinic_later": {**clinic, "path": "data/raw/clinic-later", "source": "clinic",
                             "findings": {"healthy": "normal"}},
            "ward": {"layout": "table", "path": "data/raw/ward/labels.csv",
                     "columns": {"path": "file", "label": "finding", "patient": "pid",
                                 "source": "site"},
                     "sources": ["ward-a"], "findings": {"COVID-19": "covid", "normal": "normal"}}})

    edit_params(project, add_sets)
    dvc(project, "repro", "external", "split")
    manifest = pd.read_csv(project / "data" / "merged" / "manifest.csv")
    mine = manifest[manifest["source"] == "clinic"]
    assert mine.index.min() == len(manifest) - 11  # its rows after every other source's
    assert sorted(mine["path"].str.rsplit("/", n=1).str[1]) == sorted(sum(CLINIC.values(), []))
    assert set(mine["patient"]) == {f"clinic:p{i}" for i in range(1, 8)}
    skipped = json.loads((project / "metrics" / "detail" / "data.json").read_text())["skipped"]
    reasons = {s["path"]: s["reason"] for s in skipped if "clinic" in s["path"]}
    assert reasons["data/raw/clinic/covid/scan.png"] == (
        r"file name gives no patient (no match for merge.sources.clinic.patient ^(p\d+)_)")
    assert reasons["data/raw/clinic/healthy/p8_1.png"].startswith("not a readable image")
    parts = pd.concat([pd.read_csv(project / "data" / "split" / f"{name}.csv").assign(part=name)
                       for name in ("train", "val", "test")])
    assert set(parts.loc[parts["source"] == "clinic", "part"]) == {"train", "val", "test"}
    assert (parts.groupby("patient")["part"].nunique() == 1).all()  # whole patients

    report = json.loads((project / "metrics" / "detail" / "data_external.json").read_text())
    ward = pd.read_csv(project / "data" / "external" / "ward.csv")
    assert list(zip(ward["path"], ward["class"], ward["patient"])) == [
        ("data/raw/ward/a.png", "covid", "ward-a:w1"),
        ("data/raw/ward/b.png", "normal", "ward-a:w2")]
    table = "data/raw/ward/labels.csv"
    assert report["ward"]["skipped"] == [
        {"path": f"{table}:7", "reason": "2 field(s), the header has 4"},
        {"path": "data/raw/ward/gone.png", "reason": "listed in labels.csv line 5, file missing"},
        {"path": f"{table}:6", "reason": "no pid"}]
    later = pd.read_csv(project / "data" / "external" / "clinic_later.csv")
    assert list(later["patient"]) == ["clinic:p9"]
    assert report["clinic_later"]["skipped"] == [{
        "path": "data/raw/clinic-later/healthy/p5_2.png",
        "reason": "patient clinic:p5 is in the manifest"}]
