"""Hannover Medical School's COVID-19 images, the fourth source: its reader, its bad rows, its
place in the manifest after NIH's, and as an external set."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from covidxray.data.sources import hannover_candidates
from covidxray.errors import PipelineError
from covidxray.paths import DETAIL, MANIFEST
from stages import external, merge
from tests.conftest import external_set, hannover_layout, write_params

PER_CLASS = {"normal": 4, "bacterial": 4, "viral": 4, "covid": 4}  # the sources fixture's


def test_the_reader_gives_labelled_adult_covid_rows_of_the_wanted_views(tmp_path):
    root = hannover_layout(tmp_path, [("p1", "a1", "ap"), ("p1", "a2", "PA"), ("p2", "a3", "Ap"),
                                      ("p3", "a4", "pa")])
    skipped = []
    rows = hannover_candidates(root, ["AP"], skipped)
    assert rows == [{"path": str(root / "png" / name), "class": "covid", "source": "hannover",
                     "patient": patient, "age_group": "adult"}
                    for name, patient in (("a1.png", "hannover:p1"), ("a3.png", "hannover:p2"))]
    assert [r["patient"] for r in hannover_candidates(root, ["AP", "PA"], skipped)] == [
        "hannover:p1", "hannover:p1", "hannover:p2", "hannover:p3"]
    assert skipped == []


def test_bad_hannover_rows_are_skipped_with_their_line_and_reason(tmp_path):
    root = hannover_layout(tmp_path, [
        ("", "b1", "ap"),            # line 2
        ("p1", "png/b2", "ap"),      # line 3: a path, not a name
        ("p1", "b3", "ll"),          # line 4: a lateral view, not a frontal one
        ("p1", "missing1", "pa"),    # line 5: no image
        ("p2", "b5", "ap"),          # line 6: kept
    ])
    with open(root / "data.csv", "a") as table:
        table.write("p3,b6,ap\n")    # line 7: three fields
    skipped = []
    rows = hannover_candidates(root, ["AP", "PA"], skipped)
    table = root / "data.csv"
    assert skipped == [  # rows that cannot be read first, as read_rows finds them
        {"path": f"{table}:7", "reason": "3 field(s), the header has 14"},
        {"path": f"{table}:2", "reason": "no patient_id"},
        {"path": f"{table}:3", "reason": "image_id 'png/b2' is not a file name in png/"},
        {"path": f"{table}:4", "reason": "projection 'll' is not ap or pa"},
        {"path": str(root / "png" / "missing1.png"),
         "reason": "listed in data.csv line 5, file missing"}]
    assert [r["patient"] for r in rows] == ["hannover:p2"]


@pytest.mark.parametrize("damage, message", [
    (lambda table: table.write_text(table.read_text().replace("projection", "view")),
     r"data\.csv: missing column\(s\) projection"),
    (lambda table: table.unlink(), r"data\.csv: cannot read \(.*No such file"),
])
def test_a_data_csv_without_a_needed_column_or_at_all_is_a_clear_error(tmp_path, damage, message):
    root = hannover_layout(tmp_path, [("p1", "a1", "ap")])
    damage(root / "data.csv")
    with pytest.raises(PipelineError, match=message):
        hannover_candidates(root, ["AP"], [])


def merged(capsys):
    """merge's manifest lines, its data.json and what it printed."""
    merge.main()
    report = json.loads((DETAIL / "data.json").read_text())
    return Path(MANIFEST).read_text().splitlines(), report, capsys.readouterr().out


def test_hannover_rows_come_after_nihs_and_leave_every_earlier_row_as_it_was(sources, capsys):
    write_params(merge={"per_class": PER_CLASS, "hannover": None})
    before, report_before, _ = merged(capsys)
    hannover_layout(sources["hannover"], [("p1", "a1", "ap"), ("p1", "a2", "ap"),
                                          ("p2", "a3", "pa"), ("p3", "a4", "ap"),
                                          ("p4", "a5", "pa")])
    write_params(merge={"per_class": PER_CLASS,
                        "hannover": {"views": ["AP", "PA"], "per_class": {"covid": 4}}})
    after, report, printed = merged(capsys)
    assert after[:len(before)] == before  # header, the tutorial's rows, then NIH's
    manifest = pd.read_csv(MANIFEST)
    assert list(manifest["source"].iloc[len(before) - 1:]) == ["hannover"] * 4
    assert report["hannover"] == {"covid": {"available": 5, "requested": 4, "selected": 4}}
    assert {key: report[key] for key in ("classes", "nih")} == {
        key: report_before[key] for key in ("classes", "nih")}
    assert report["sources"]["hannover"]["covid"] == 4 and report["total"] == len(before) + 3
    assert "merge: hannover      covid              4 of 5 available" in printed


def test_a_hannover_layout_set_keeps_only_unseen_images_and_patients_and_says_why(sources):
    hannover_layout(sources["hannover"], [("p1", "a1", "ap"), ("p2", "a2", "pa")])
    merge.main()
    folder = hannover_layout(Path("data/raw/hannover-more"), [
        ("p1", "b1", "ap"),          # a patient the manifest holds
        ("p8", "b2", "ap"),          # the bytes of a manifest image, below
        ("p9", "b3", "pa"),          # unseen: kept if the set asks for PA
        ("p11", "b5", "ap"),         # unseen: kept
    ], seed=450)
    shutil.copy(sources["hannover"] / "png" / "a2.png", folder / "png" / "b2.png")
    spec = {"layout": "hannover", "path": str(folder), "views": ["AP", "PA"]}
    rows, skipped = external.read_set(external_set("h", {**spec, "views": ["AP"]}),
                                      pd.read_csv(MANIFEST))
    assert list(rows["path"].map(lambda p: Path(p).name)) == ["b5.png"]
    assert {Path(s["path"]).name: s["reason"] for s in skipped} == {
        "b1.png": "patient hannover:p1 is in the manifest",
        "b2.png": f"same bytes as manifest image {sources['hannover'] / 'png' / 'a2.png'}"}
    rows, _ = external.read_set(external_set("h", spec), pd.read_csv(MANIFEST))
    names = rows["path"].map(lambda p: Path(p).name)
    assert sorted(zip(names, rows["class"], rows["patient"])) == [
        ("b3.png", "covid", "hannover:p9"), ("b5.png", "covid", "hannover:p11")]
