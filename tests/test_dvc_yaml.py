"""The rules dvc.yaml keeps with the code: no stage imports another, each stage depends on
exactly the library modules it runs, every stage waits for the params check, every task is a
model artifact."""

import ast

import yaml

from covidxray.params import load_params
from tests.conftest import ROOT


def imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_no_stage_module_imports_another_and_the_library_imports_no_stage():
    stages = {path.stem for path in (ROOT / "stages").glob("*.py")} - {"__init__"}
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    commands = [s["cmd"] if "cmd" in s else s["do"]["cmd"] for s in dvc.values()]
    assert {c.split()[2].split(".")[1] for c in commands} <= stages  # python -m stages.<name>
    for folder in ("stages", "covidxray", "bench"):
        for path in (ROOT / folder).glob("*.py"):
            wrong = [m for m in imported_modules(path)
                     if m.startswith("stages.") and m.split(".")[1] in stages]
            assert not wrong, f"{path.relative_to(ROOT)} imports stage module(s) {wrong}"


def library_files(path, found=None):
    """The covidxray modules a module imports, and those they import, as paths from ROOT."""
    found = set() if found is None else found
    for name in imported_modules(path):
        module = ROOT / f"{name.replace('.', '/')}.py"
        if name.startswith("covidxray.") and module.is_file() and module not in found:
            found.add(module)
            library_files(module, found)
    return found


def test_every_stage_depends_on_exactly_the_library_modules_it_runs():
    """One missing leaves the stage's outputs stale and dvc status clean; one too many re-runs
    the stage (a VGG16 pass, say) for a change to code it never runs."""
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        spec = stage.get("do", stage)
        module = ROOT / f"{spec['cmd'].split()[2].replace('.', '/')}.py"
        needed = {str(path.relative_to(ROOT)) for path in library_files(module)}
        listed = {dep for dep in spec["deps"] if dep.startswith("covidxray/")}
        assert needed <= listed, f"{name}: add {sorted(needed - listed)}"
        assert listed <= needed, f"{name}: it runs none of {sorted(listed - needed)}"


def test_every_stage_waits_for_the_params_check():
    """DVC deletes a stage's outputs before it runs it: a bad value must stop `dvc repro` in
    the check stage, before any stage that owns something is touched."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
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
