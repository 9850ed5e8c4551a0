"""The shape of the code base: the direction of dependency, `runner <- compile <- latency_model <- prune` (ARCHITECTURE.md):
no module imports a package above its own, at module level or inside a function. The one
exception is a command line (`cli.py`, `__main__.py`) of `latency_model`, which may look a model
up by name and call the composition that lives in `prune`. And the test tier's list of
end-to-end tests (tests/conftest.py) names tests that exist."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDER = ("runner", "compile", "latency_model", "prune")
COMMAND_LINES = {"cli.py", "__main__.py"}


def imported_roots(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every import in `path`, wherever it is in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", ORDER[:-1])
def test_no_package_imports_one_above_it(package):
    above = set(ORDER[ORDER.index(package) + 1:])
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        command_line = package == "latency_model" and path.name in COMMAND_LINES
        for root, line in imported_roots(path):
            if root in above and not (command_line and root == "prune"):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {root}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_function_local_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from prune.models import create_model\n")
    assert ("prune", 2) in imported_roots(module)


def test_every_test_the_tier_lists_as_end_to_end_exists():
    from helpers.tiers import END_TO_END_TESTS

    tests = Path(__file__).resolve().parent
    missing = []
    for file, names in END_TO_END_TESTS.items():
        tree = ast.parse((tests / file).read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        missing += [f"{file}::{name}" for name in sorted(names - defined)]
    assert not missing, "renamed or removed; update END_TO_END_TESTS in tests/helpers/tiers.py: " + ", ".join(missing)
