"""Every third-party module the code imports is declared in pyproject.toml.

A package installed by hand on a developer's machine (or CI's) would otherwise hide a
missing declaration until a user's fresh install fails, as scipy once did.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("pcrl", "tests", "benchmarks")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _normalise(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def declared_distributions() -> set[str]:
    """Distribution names in [project] dependencies and every optional-dependency group."""
    project = _pyproject()["project"]
    requirements = list(project["dependencies"])
    for group in project.get("optional-dependencies", {}).values():
        requirements += group
    return {_requirement_name(r) for r in requirements}


def imported_top_level_modules(folders: tuple[str, ...] = SCANNED) -> dict[str, set[str]]:
    """Top-level module name -> files importing it (absolute imports only), by parsing."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def first_party_modules() -> set[str]:
    """The package itself and the modules of the scanned folders (tests import each other)."""
    local = {"pcrl"}
    for folder in ("tests", "benchmarks"):
        local |= {p.stem for p in (REPO / folder).rglob("*.py")}
    return local


def test_the_scan_sees_known_imports() -> None:
    """The scanner itself: it finds imports written in several forms, and no docstring words."""
    modules = imported_top_level_modules()
    assert {"torch", "numpy", "SimpleITK", "scipy", "yaml", "pytest"} <= set(modules)
    assert "pcrl/preprocessing/boxes.py" in modules["scipy"]
    assert "where" not in modules and "it" not in modules


def test_every_third_party_import_is_declared() -> None:
    distributions = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    stdlib = set(sys.stdlib_module_names)
    undeclared = {}
    for module, files in imported_top_level_modules().items():
        if module in stdlib or module in first_party_modules() or module == "__future__":
            continue
        providers = {_normalise(d) for d in distributions.get(module, [])}
        if not providers:
            undeclared[module] = (sorted(files)[:3], "not installed at all")
        elif not providers & declared:
            undeclared[module] = (sorted(files)[:3], f"provided by {sorted(providers)}")
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_requires_python_is_true() -> None:
    """The code uses 3.11 features (BaseException.add_note, tomllib): the floor says so."""
    spec = _pyproject()["project"]["requires-python"]
    floor = tuple(int(x) for x in re.fullmatch(r">=\s*(\d+)\.(\d+)", spec).groups())
    assert floor >= (3, 11), spec


@pytest.mark.parametrize("requirement,name", [
    ("snakemake-executor-plugin-slurm>=1.0", "snakemake-executor-plugin-slurm"),
    ("SimpleITK>=2.3", "simpleitk"),
    ("pytest_timeout >= 2", "pytest-timeout"),
    ("dvc[s3]>=3", "dvc"),
])
def test_requirement_names_are_parsed(requirement: str, name: str) -> None:
    assert _requirement_name(requirement) == name
