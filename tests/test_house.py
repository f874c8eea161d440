"""The layout's rules (docs/development.md#the-house): the library's wings import only from the
wings before them, the top-level modules from none, and no module outgrows one topic."""

import ast

import pytest

from scripts.dvc_yaml import imported_modules
from tests.conftest import ROOT

WINGS = ("config", "data", "model", "evaluation", "app")  # each may import those before it
TOP = ("errors", "files", "native_log", "paths", "runner")  # what every wing uses


def wing_of(module):
    """covidxray.model.head -> model; covidxray.paths -> None (the top)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else None


def library_imports(path):
    return {m for m in imported_modules(path) if m.startswith("covidxray.")}


def test_the_library_is_the_top_and_the_wings_and_nothing_else():
    top = {p.stem for p in (ROOT / "covidxray").glob("*.py")} - {"__init__", "__main__"}
    wings = {p.name for p in (ROOT / "covidxray").iterdir()
             if p.is_dir() and p.name != "__pycache__"}
    assert (top, wings) == (set(TOP), set(WINGS))
    for wing in WINGS:
        init = ROOT / "covidxray" / wing / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init}: say what the wing owns"


@pytest.mark.parametrize("wing", WINGS)
def test_a_wing_imports_only_the_top_and_the_wings_before_it(wing):
    allowed = set(WINGS[:WINGS.index(wing) + 1])
    for path in (ROOT / "covidxray" / wing).glob("*.py"):
        upward = {m for m in library_imports(path) if wing_of(m) not in allowed | {None}}
        assert not upward, f"{path.relative_to(ROOT)} imports upward: {sorted(upward)}"


def test_the_top_imports_no_wing():
    for name in TOP:
        path = ROOT / "covidxray" / f"{name}.py"
        wings = {m for m in library_imports(path) if wing_of(m)}
        assert not wings, f"{path.relative_to(ROOT)} imports {sorted(wings)}"


def test_a_stage_imports_the_library_never_the_app():
    """The app is what a person runs; a stage needing its code means the code belongs lower."""
    for path in (ROOT / "stages").glob("*.py"):
        app = {m for m in library_imports(path) if wing_of(m) == "app"}
        assert not app, f"{path.relative_to(ROOT)} imports {sorted(app)}"


def test_no_module_outgrows_one_topic():
    for folder in ("covidxray", "stages", "bench", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            lines = len(path.read_text().splitlines())
            assert lines <= 300, f"{path.relative_to(ROOT)}: {lines} lines; split it by topic"
