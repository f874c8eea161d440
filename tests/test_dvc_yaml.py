"""The rules dvc.yaml keeps with the code: no stage imports another, each stage depends on the
library code it runs (scripts/dvc_yaml.py writes those deps, and the per-task plots and
artifacts, and says when dvc.yaml is out of step), every stage waits for the params check,
every task is a model artifact."""

import re
import subprocess
import sys

import yaml

from bench.workspace import python_first_env
from covidxray.config.params import load_params
from scripts.dvc_yaml import imported_modules, library_deps, library_files, written
from tests.conftest import ROOT


def dvc_stages():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_module(stage):
    """stages/<name>.py of a stage, from its `python -m stages.<name> ...` command."""
    return ROOT / f"{stage.get('do', stage)['cmd'].split()[2].replace('.', '/')}.py"


def test_stages_holds_only_dvc_yaml_stages_and_nothing_imports_a_stage():
    stages = {path.stem for path in (ROOT / "stages").glob("*.py")} - {"__init__"}
    assert {stage_module(s).stem for s in dvc_stages().values()} == stages
    for folder in ("stages", "covidxray", "bench", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            wrong = [m for m in imported_modules(path)
                     if m.startswith("stages.") and m.split(".")[1] in stages]
            assert not wrong, f"{path.relative_to(ROOT)} imports stage module(s) {wrong}"


def test_every_stage_depends_on_the_library_code_it_runs():
    """One module missing leaves the stage's outputs stale and `dvc status` clean."""
    for name, stage in dvc_stages().items():
        deps = stage.get("do", stage)["deps"]
        listed = [dep for dep in deps if dep.startswith("covidxray/")]
        assert listed == library_deps(stage_module(stage)), \
            f"{name}: run `python scripts/dvc_yaml.py`"
        for module in library_files(stage_module(stage)):
            covered = [d for d in listed if str(module.relative_to(ROOT)).startswith(d)]
            assert covered, f"{name} runs {module.relative_to(ROOT)} but does not depend on it"


def test_a_stage_depends_on_a_wing_whole_only_where_it_runs_a_third_of_it():
    """The rule that keeps dvc.yaml short without rerunning a stage for most of the library."""
    features = library_deps(ROOT / "stages/features.py")
    split = library_deps(ROOT / "stages/split.py")  # 2 of data's 8 modules
    assert "covidxray/model" in features and "covidxray/model/features.py" not in features
    assert "covidxray/data/splitting.py" in split and "covidxray/data" not in split
    assert "covidxray/model" not in split and "covidxray/config" in split


def test_dvc_yaml_is_in_step_with_the_code_and_params_yaml():
    text = (ROOT / "dvc.yaml").read_text()
    assert written(text, load_params(ROOT / "params.yaml").tasks) == text
    assert len(text.splitlines()) <= 400  # a file a person reads
    check = subprocess.run([sys.executable, "scripts/dvc_yaml.py", "--check"], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_the_generator_notices_a_new_task_and_a_dropped_import(tmp_path):
    text = (ROOT / "dvc.yaml").read_text()
    tasks = load_params(ROOT / "params.yaml").tasks
    fewer = dict(list(tasks.items())[:-1])
    assert written(text, fewer) != text and "adult_pneumonia" not in written(text, fewer).split(
        "artifacts:")[1]
    dep = re.search(r"\n *- covidxray/\w+/\w+\.py\n", text)[0]
    stale = text.replace(dep, "\n", 1)
    assert written(stale, tasks) == text != stale


def test_every_stage_waits_for_the_params_check():
    """DVC deletes a stage's outputs before it runs it: a bad value must stop `dvc repro` in
    the check stage, before any stage that owns something is touched."""
    stages = dvc_stages()
    assert "params.yaml" in stages["check"]["deps"]
    assert stages["check"]["outs"] == ["data/params-checked.txt"]
    for name, stage in stages.items():
        if name != "check":
            assert "data/params-checked.txt" in stage.get("do", stage)["deps"], name


def test_every_task_is_a_model_artifact_labelled_with_its_classes_and_sources():
    """The registry names each task's model; an artifact of a task since removed, or a task
    without one, would fetch nothing or nothing new."""
    artifacts = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]
    tasks = load_params(ROOT / "params.yaml").tasks
    assert list(artifacts) == list(tasks)
    for name, task in tasks.items():
        artifact = artifacts[name]
        assert artifact["path"] == f"models/{name}.keras" and artifact["type"] == "model"
        assert artifact["labels"] == [f"task-{name}", *(f"class-{c}" for c in task.classes),
                                      *(f"data-{s}" for s in task.sources)]


def test_the_docs_dvc_exp_show_commands_run_as_written(tmp_path):
    """docs/team-workflow.md's readable `dvc exp show` lines, run in this repository (they read
    git and the committed metrics): each runs, and keeps what it names."""
    text = (ROOT / "docs/team-workflow.md").read_text()
    block = re.search(r"```bash\n(dvc exp show --only-changed --drop.*?)```", text, re.S)[1]
    lines = [line.split("  #")[0].replace("experiments.csv", str(tmp_path / "experiments.csv"))
             for line in block.splitlines()]
    shown = [subprocess.run(line, shell=True, cwd=ROOT, capture_output=True, text=True,
                            env={**python_first_env(), "COLUMNS": "250"}) for line in lines]
    assert all(done.returncode == 0 for done in shown), [done.stderr for done in shown]
    assert "metrics/binary.json:accuracy" in shown[1].stdout and "Created" not in shown[1].stdout
    header = (tmp_path / "experiments.csv").read_text().splitlines()[0].split(",")
    assert "metrics/binary.json:accuracy" in header and "head.l2" in header
