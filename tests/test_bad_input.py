"""Bad input and interruptions: awkward files through every reader, malformed metadata rows,
outputs made from another manifest, stopped stages and byte-identical model files."""

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from covidxray.data.images import MAX_PIXELS
from covidxray.data.provenance import trained_record
from covidxray.data.shards import Shards
from covidxray.errors import PipelineError
from covidxray.files import replacing, sha256, write_table
from covidxray.model.backbone import build_backbone, build_extractor
from covidxray.model.classifier import build_classifier, load_classifier, save_model
from covidxray.model.head import build_head
from covidxray.paths import DETAIL, MANIFEST, PREPARED_IMAGES
from stages import external, features, merge, prepare, split, train
from tests.conftest import (HANNOVER_HEADER, METADATA_HEADER, ROOT, TINY, external_set,
                            hannover_row, write_awkward_files, write_image, write_params)

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])  # dvc's python


def check_kept_or_reasoned(made, kept, skipped):
    """Every awkward file is data (kept) or left out with a reason, never both or neither."""
    for kind, (name, is_data) in made.items():
        assert (name in kept) == is_data and (name in skipped) != is_data, kind
    assert skipped[made["oversized"][0]].startswith(f"too large, over {MAX_PIXELS:,} pixels")
    assert "Too many levels of symbolic links" in skipped[made["looping"][0]]
    assert "No such file" in skipped[made["dangling"][0]]


def check_merge_kept_or_reasoned(made):
    merge.main()
    kept = set(pd.read_csv(MANIFEST)["path"].map(lambda p: Path(p).name))
    report = json.loads((DETAIL / "data.json").read_text())
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    check_kept_or_reasoned(made, kept, skipped)


def test_merge_keeps_or_reports_every_awkward_file(sources, oversized):
    made = write_awkward_files(sources["kermany"] / "NORMAL", oversized,
                               name=lambda i, kind, suffix: f"IM-09{i:02d}-0001{suffix}")
    write_params(merge={"per_class": {"normal": 99, "bacterial": 4, "viral": 4, "covid": 4}})
    check_merge_kept_or_reasoned(made)


def test_merge_keeps_or_reports_every_awkward_hannover_file(sources, oversized):
    """Hannover names every image <image_id>.png: the files not named .png get it appended (a
    link keeps its name, or the looping one would dangle instead)."""
    png = sources["hannover"] / "png"
    made = write_awkward_files(png, oversized)
    for kind, (name, is_data) in made.items():
        if not name.endswith(".png"):
            (png / name).rename(png / f"{name}.png")
            made[kind] = (f"{name}.png", is_data)
    (sources["hannover"] / "data.csv").write_text(HANNOVER_HEADER + "".join(
        hannover_row(f"p{i}", name.removesuffix(".png"), "ap")
        for i, (name, _) in enumerate(made.values())))
    check_merge_kept_or_reasoned(made)


def test_external_keeps_or_reports_every_awkward_file(sources, oversized):
    folder = Path("data/raw/other")
    made = write_awkward_files(folder / "images", oversized)
    (folder / "metadata.csv").write_text(METADATA_HEADER + "".join(
        f"p{i},0,M,60,COVID-19,,PA,X-ray,2020,,{name}\n"
        for i, (name, _) in enumerate(made.values())))
    merge.main()
    spec = {"layout": "covid", "path": str(folder), "modality": "X-ray", "views": ["PA"],
            "findings": {"COVID-19": "covid"}}
    rows, skipped = external.read_set(external_set("other", spec), pd.read_csv(MANIFEST))
    check_kept_or_reasoned(made, set(rows["path"].map(lambda p: Path(p).name)),
                           {Path(s["path"]).name: s["reason"] for s in skipped})


def test_prepare_decodes_every_awkward_image_and_names_each_file_it_cannot(sources, oversized):
    made = write_awkward_files(Path("awkward"), oversized)
    for name, is_data in made.values():
        path = Path("awkward", name)
        digest = sha256(path) if path.is_file() else ""
        MANIFEST.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"path": [path], "sha256": [digest]}).to_csv(MANIFEST, index=False)
        if is_data:
            prepare.main()
            assert len(Shards(PREPARED_IMAGES, "prepare")) == 1
        else:
            with pytest.raises(PipelineError, match=rf"^awkward/{name}: "):
                prepare.main()


def test_prepare_refuses_a_file_changed_since_merge(sources):
    merge.main()
    first = pd.read_csv(MANIFEST)["path"][0]
    write_image(Path(first), seed=999)
    with pytest.raises(PipelineError, match=rf"{first}: changed since merge .*dvc repro merge"):
        prepare.main()


@pytest.mark.parametrize("rows, reasons", [
    (b"1,2,3\n", {7: "3 field(s), the header has 11"}),
    (b"6,0,M,60,COVID-19,,PA,X-ray,2020,,covid-6.png\xff\n", {7: "not valid UTF-8"}),
    (b"7,0,M,60,COVID-19,,PA,X-ray,2020,,\n", {7: "filename '' is not a file name in images/"}),
    (b",0,M,60,COVID-19,,PA,X-ray,2020,,covid-0.png\n", {7: "no Patientid"}),
    (b'4,0,M,60,"COVID-19,,PA,X-ray,2020,,covid-4.png\n5,0,M,60,COVID-19,,PA,X-ray,2020,,b.png\n',
     {"7-8": "5 field(s), the header has 11 (an open quote joined its lines)"}),
])
def test_a_malformed_metadata_row_is_skipped_with_its_line_and_reason(sources, rows, reasons):
    with open(sources["covid"] / "metadata.csv", "ab") as meta:
        meta.write(rows)
    merge.main()
    skipped = {s["path"].rsplit(":", 1)[1]: s["reason"]
               for s in json.loads((DETAIL / "data.json").read_text())["skipped"]
               if "metadata.csv:" in s["path"]}
    assert skipped == {str(line): reason for line, reason in reasons.items()}
    assert len(pd.read_csv(MANIFEST).query("`class` == 'covid'")) == 4  # the good rows stay


@pytest.mark.slow
def test_outputs_of_another_manifest_are_refused_with_the_stage_to_rerun(sources):
    """The issue's case: new pixels, same row count; merge, prepare and split rerun, not
    features."""
    tiny = {"image_size": 32, "backbone": {"weights": "none"},
            "tasks": {"binary": {"classes": ["normal", "covid"],
                                 "sources": ["kermany", "covid-chestxray"],
                                 "epochs": 1, "lr": 1e-3,
                                 "batch_size": 4}},
            "split": {"test_per_class": 1, "val_fraction": 0.5}}
    write_params(**tiny)
    for stage in (merge, prepare, split, external, features):
        stage.main()
    write_image(sources["covid"] / "images" / "covid-0.png", 998, mode="RGB")
    for stage in (merge, prepare, split):
        stage.main()
    with pytest.raises(PipelineError,
                       match=r"data/features/plain was made from another data/merged/"
                             r"manifest.csv .*; run `dvc repro features`"):
        train.main("binary")
    with pytest.raises(PipelineError,  # the external sets' features need their images first
                       match=r"data/external/\w+\.npz was made from another data/merged/"
                             r"manifest.csv .*; run `dvc repro external`"):
        features.main()
    external.main()
    features.main()
    train.main("binary")
    write_params(**tiny, seed=7)  # another split of the same manifest
    split.main()
    with pytest.raises(PipelineError, match=r"binary.keras was trained on another split .*"
                                            r"`dvc repro train@binary`"):
        trained_record("binary")


# A stand-in for a stage: it writes its output through `replacing` and takes a minute about it.
SLOW_STAGE = """
import os, time
from pathlib import Path
from covidxray.runner import cli
from covidxray.files import replacing

def main():
    Path("pid").write_text(str(os.getpid()))
    with replacing(Path("out.txt")) as partial:
        partial.write_text("half")
        time.sleep(60)
        partial.write_text("whole")

cli(main)()
"""


def wait_for(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def running(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def half_written(folder):
    return list(folder.glob(".out.partial-*"))


@pytest.mark.parametrize("signum, said", [(signal.SIGINT, "Ctrl-C"),
                                          (signal.SIGTERM, "SIGTERM")])
def test_an_interrupted_stage_says_so_in_one_line_and_leaves_no_half_output(tmp_path, signum,
                                                                            said):
    (tmp_path / "slow.py").write_text(SLOW_STAGE)
    # as from a terminal: pytest-xdist's workers ignore SIGINT, and children inherit that
    stage = subprocess.Popen([sys.executable, "-m", "slow"], cwd=tmp_path, env=ENV,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(lambda: half_written(tmp_path))
    stage.send_signal(signum)
    assert stage.wait(timeout=30) == 130
    assert stage.stderr.read().splitlines() == [
        f"interrupted: python -m slow stopped ({said}) and left every output it had not"
        " finished as it was; run `dvc repro` to resume (stages that finished are not run"
        " again)"]
    assert not half_written(tmp_path) and not (tmp_path / "out.txt").exists()


@pytest.mark.slow
def test_a_stage_stops_when_dvc_dies_and_leaves_no_half_output(tmp_path):
    """The issue's case: SIGKILL dvc; its stage used to run on and write its output later.
    The redirect keeps bash between dvc and the stage, the harder of the two process trees."""
    (tmp_path / "slow.py").write_text(SLOW_STAGE)
    (tmp_path / "dvc.yaml").write_text(
        f"stages:\n  slow:\n    cmd: {sys.executable} -m slow 2> log.txt\n"
        "    outs: [out.txt]\n")
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=tmp_path, check=True)
    dvc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=tmp_path, env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: half_written(tmp_path))
    pid = int((tmp_path / "pid").read_text())
    dvc.kill()
    dvc.wait()
    wait_for(lambda: not running(pid), seconds=10)
    assert "interrupted: slow stopped (SIGTERM)" in (tmp_path / "log.txt").read_text()
    assert not half_written(tmp_path) and not (tmp_path / "out.txt").exists()


LINKED_STAGE = """stages:
  plain:
    cmd: python -c "open('plain/a.txt', 'w').write('a')"
    outs: [plain]
  ours:
    cmd: python -c "from covidxray.files import write_json; write_json('ours/a/b.json', {})"
    outs: [ours]
"""


def test_a_linked_output_folder_dvc_made_world_writable_gets_its_mode_back(tmp_path):
    """DVC's removal of a linked output chmods the link's rwxrwxrwx onto its target (`plain`
    shows it); a stage writing through covidxray.files sets it back to the umask's mode."""
    (tmp_path / "dvc.yaml").write_text(LINKED_STAGE)
    for name in ("plain", "ours"):
        (tmp_path / "disk" / name).mkdir(parents=True, mode=0o755)
        (tmp_path / name).symlink_to(tmp_path / "disk" / name)
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                    [sys.executable, "-m", "dvc", "repro", "-q"]):
        subprocess.run(command, cwd=tmp_path, env={**ENV, "PATH": PATH}, check=True)
    mode = {name: oct((tmp_path / "disk" / name).stat().st_mode & 0o7777)
            for name in ("plain", "ours")}
    umask = os.umask(0)
    os.umask(umask)
    assert mode == {"plain": "0o777", "ours": oct(0o777 & ~umask)}
    assert json.loads((tmp_path / "ours" / "a" / "b.json").read_text()) == {}


def orphans_parent(folder):
    """The process an orphan is re-parented to here: init (1), or a subreaper."""
    subprocess.run(["sh", "-c", "(sleep 0.2; cut -d' ' -f4 /proc/self/stat > reaper) & exit"],
                   cwd=folder, check=True)
    wait_for(lambda: (folder / "reaper").is_file() and (folder / "reaper").read_text())
    return int((folder / "reaper").read_text())


@pytest.mark.slow
def test_a_stage_whose_dvc_died_before_it_started_stops_before_it_writes(tmp_path):
    """dvc SIGKILLed in a stage's first moments: the stage is init's child from its start. It
    used to run on, the watch beginning only after Keras loaded, and rewrite its outputs."""
    if orphans_parent(tmp_path) != 1:
        pytest.skip("orphans here go to a subreaper, not init")
    (tmp_path / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    for folder in ("nih-chestxray14", "covid-chestxray-dataset",
                   "covid-chestxray-dataset-2020-06-22"):  # what its sets name: check looks
        (tmp_path / "data" / "raw" / folder).mkdir(parents=True)
    orphan = f"exec sh -c 'echo $$ > pid; exec {sys.executable} -m stages.check'"
    subprocess.run(["sh", "-c", f"(sleep 0.5; {orphan}) & exit"], cwd=tmp_path, check=True,
                   env={**ENV, "DVC_STAGE": "check"})
    wait_for(lambda: (tmp_path / "pid").is_file() and (tmp_path / "pid").read_text())
    wait_for(lambda: not running(int((tmp_path / "pid").read_text())))
    assert not (tmp_path / "data" / "params-checked.txt").exists()
    subprocess.run([sys.executable, "-m", "stages.check"], cwd=tmp_path, env=ENV, check=True)
    assert (tmp_path / "data" / "params-checked.txt").is_file()  # as it does when not orphaned


def test_two_saves_of_a_model_are_byte_identical(tmp_path):
    """models/<task>.keras used to hold its save time and memory addresses (shared_object_id):
    every retrain changed its md5. Two builds of one model, saved 2 s apart, must not differ."""
    def build():  # as a fresh process does: same seed, same automatic layer names
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        backbone = build_backbone("none", 32, "mixed_bfloat16")  # shares a dtype policy
        return build_classifier(build_extractor(backbone), build_head(2, (1, 1, 512)))

    save_model(build(), tmp_path / "a.keras")
    time.sleep(2.1)  # a zip entry's time has a resolution of 2 s
    classifier = build()
    save_model(classifier, tmp_path / "b.keras")
    first, second = ((tmp_path / name).read_bytes() for name in ("a.keras", "b.keras"))
    assert hashlib.md5(first).digest() == hashlib.md5(second).digest()
    reloaded = load_classifier(tmp_path / "b.keras")
    assert all(np.array_equal(a, b) for a, b in zip(reloaded.get_weights(),
                                                     classifier.get_weights()))


def test_an_output_folder_linked_to_another_disk_is_replaced_there_and_stays_a_link(sources,
                                                                                   tmp_path):
    """data/features as a link to a larger disk: the final rename used to fail
    (NotADirectoryError), after an rmtree of the link had failed without a word."""
    write_params(**TINY, features={"views": 1})
    merge.main()
    prepare.main()
    external.main()
    elsewhere = tmp_path / "larger-disk" / "features"
    (elsewhere / "old-view").mkdir(parents=True)
    Path("data/features").symlink_to(elsewhere)
    features.main()
    assert Path("data/features").is_symlink()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["plain", "view-00"]
    assert len(Shards("data/features/plain", "features")) == len(pd.read_csv(MANIFEST))


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KB tmpfs: a disk that fills up (needs root and mount; skipped elsewhere)."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_an_output_too_large_for_its_disk_is_refused_with_the_room_it_needs(sources,
                                                                           small_disk):
    write_params(**TINY, features={"views": 1})
    merge.main()
    PREPARED_IMAGES.parent.mkdir(parents=True)
    PREPARED_IMAGES.symlink_to(small_disk / "images")
    # 24 images of 32 x 32 x 3 bytes
    with pytest.raises(PipelineError, match=r"^data/prepared/images: needs about 72\.0 KB and its"
                                            r" disk has 64\.0 KB free; free some space"):
        prepare.main()
    assert not list(small_disk.iterdir())


def test_a_disk_that_fills_up_while_writing_is_named_and_keeps_the_old_output(small_disk):
    """Each write of a stage (merge's manifest, split's tables, shards) ends this way, not in an
    OSError traceback; numpy's short write carries no errno, so the free space tells."""
    old = small_disk / "out.bin"
    old.write_bytes(b"old")
    with pytest.raises(PipelineError, match=r"out\.bin: the disk filled up after 6\d\.\d KB"
                                            r" written \(0 bytes free\); free some space"):
        with replacing(old) as partial:
            np.zeros(100_000, np.uint8).tofile(partial)
    assert old.read_bytes() == b"old" and list(small_disk.iterdir()) == [old]
    with pytest.raises(PipelineError, match=r"the disk filled up"):
        write_table(pd.DataFrame({"path": ["x" * 1000] * 100}), small_disk / "table.csv")


def test_a_command_of_the_app_is_named_as_people_run_it_and_not_told_to_dvc_repro(monkeypatch):
    """Ctrl-C's line names `covidxray predict` and says nothing of `dvc repro`, also when it
    runs as `python -m covidxray.app.predict` (its main then lives in __main__)."""
    from covidxray import runner
    from covidxray.app import predict

    monkeypatch.delenv("DVC_STAGE", raising=False)
    as_main = types.ModuleType("__main__")
    as_main.__spec__ = importlib.util.find_spec("covidxray.app.predict")
    monkeypatch.setitem(sys.modules, "__main__", as_main)

    def main():
        """predict's main() as python -m runs it."""
    main.__module__ = "__main__"
    for command in (predict.main, main):
        assert runner.stage_name(command, ["--task", "binary"]) == "covidxray predict"
        assert not runner.is_stage(command)
    from stages import split  # a stage: resumed by dvc repro

    assert runner.is_stage(split.main)
    assert runner.stage_name(split.main, []) == "python -m stages.split"
