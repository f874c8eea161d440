"""Writes the parts of dvc.yaml that follow from the code and from params.yaml, so that a person
edits only what is a choice:

- each stage's library deps, from its imports: a wing (covidxray/<wing>/) whole where the stage
  runs a third of its modules or more, else the modules one by one;
- the per-task training curves (`plots:`) and model artifacts (`artifacts:`), from params.yaml's
  tasks.

    python scripts/dvc_yaml.py           # rewrite dvc.yaml in place
    python scripts/dvc_yaml.py --check   # exit 1 and name what differs (tests/test_dvc_yaml.py)
"""

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from covidxray.config.params import load_params  # noqa: E402

LIBRARY = ROOT / "covidxray"
WINGS = sorted(p.name for p in LIBRARY.iterdir() if (p / "__init__.py").is_file())
GENERATED = ("# Written from params.yaml's tasks by `python scripts/dvc_yaml.py`: edit those, then"
             " run it.\n")


def imported_modules(path):
    """Every dotted name an `import` or `from ... import` of the file names."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def library_files(path, found=None):
    """The covidxray modules a module imports, and those they import, as paths."""
    found = set() if found is None else found
    for name in imported_modules(path):
        module = ROOT / f"{name.replace('.', '/')}.py"
        if name.startswith("covidxray.") and module.is_file() and module not in found:
            found.add(module)
            library_files(module, found)
    return found


def wing_modules(wing):
    return {p for p in (LIBRARY / wing).glob("*.py") if p.name != "__init__.py"}


def library_deps(stage_module):
    """A stage's covidxray deps: top-level modules one by one, a wing whole where the stage
    runs a third of it or more (a change elsewhere in it reruns the stage: the price of a
    dvc.yaml a person can read), else the wing's modules it runs."""
    runs = library_files(stage_module)
    deps = sorted(str(p.relative_to(ROOT)) for p in runs if p.parent == LIBRARY)
    for wing in WINGS:
        used = runs & wing_modules(wing)
        if 3 * len(used) >= len(wing_modules(wing)):
            deps.append(f"covidxray/{wing}")
        else:
            deps += sorted(str(p.relative_to(ROOT)) for p in used)
    return deps


def with_library_deps(text):
    """dvc.yaml's text with each stage's covidxray/ deps written after its stages/<name>.py."""
    stages = yaml.safe_load(text)["stages"]
    lines = [line for line in text.splitlines(keepends=True)
             if not re.match(r"\s+- covidxray/", line)]
    for stage in stages.values():
        module = stage.get("do", stage)["cmd"].split()[2]  # python -m stages.<name> ...
        own = f"- {module.replace('.', '/')}.py"
        at = next(i for i, line in enumerate(lines) if line.strip() == own)
        indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
        lines[at + 1:at + 1] = [f"{indent}- {dep}\n" for dep in library_deps(ROOT / f"{own[2:]}")]
    return "".join(lines)


def curves(task):
    """The tutorial's curves of one task: train and validation together."""
    folder = f"metrics/train/{task}/plots/metrics"
    return [f"  - {task} {metric}: {{x: step, y: {{{folder}/train/{metric}.tsv: {metric},"
            f" {folder}/eval/{metric}.tsv: {metric}}}}}\n" for metric in ("accuracy", "loss")]


def artifact(name, task):
    labels = [f"task-{name}", *(f"class-{c}" for c in task.classes),
              *(f"data-{s}" for s in task.sources)]
    return (f"  {name}: {{path: models/{name}.keras, type: model, labels: [{', '.join(labels)}],"
            f" desc: \"the {name} task's classifier (raw RGB in, class probabilities out);"
            f" research only\"}}\n")


def task_sections(tasks):
    """The plots and artifacts sections for params.yaml's tasks, as dvc.yaml ends."""
    return "".join(["\n# The tutorial's curves, for `dvc plots show` and `dvc plots diff`.\n",
                    GENERATED, "plots:\n", *(c for task in tasks for c in curves(task)),
                    "\n# The model registry: each task's classifier by name, for `dvc artifacts"
                    " get` (a version is a\n# git tag that `gto register <task>` makes;"
                    " docs/team-workflow.md).\n", GENERATED, "artifacts:\n",
                    *(artifact(name, task) for name, task in tasks.items())])


def written(text, tasks):
    stages = with_library_deps(text)
    return stages[: stages.index("\n# The tutorial's curves")] + task_sections(tasks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    path = ROOT / "dvc.yaml"
    text, args = path.read_text(), parser.parse_args()
    new = written(text, load_params(ROOT / "params.yaml").tasks)
    if args.check and new != text:
        sys.exit("dvc.yaml is out of step with the code's imports or params.yaml's tasks:"
                 " run `python scripts/dvc_yaml.py` and commit the result")
    if not args.check:
        path.write_text(new)


if __name__ == "__main__":
    main()
