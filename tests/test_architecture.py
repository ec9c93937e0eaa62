"""The layers of docs/architecture.md hold: the library never imports the CLI or the stage
drivers, and the stage drivers never import the CLI."""

from __future__ import annotations

import ast
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "pcrl"


def imported_modules(path: Path) -> set[str]:
    """Absolute module names imported by ``path`` (at any depth: lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"{path}: relative import of {node.module}; use absolute imports")
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _offenders(files: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in files:
        hits = sorted(m for m in imported_modules(path)
                      if any(m == f or m.startswith(f + ".") for f in forbidden))
        if hits:
            bad[str(path.relative_to(PACKAGE.parent))] = hits
    return bad


#: The drivers above the stages: the CLI and the known-answer study (docs/architecture.md).
DRIVERS = ("cli.py", "study.py")


def library_files() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py"))
            if p.name not in DRIVERS or p.parent != PACKAGE
            if "stages" not in p.relative_to(PACKAGE).parts]


def test_the_library_never_imports_the_cli_or_the_stages() -> None:
    files = library_files()
    assert PACKAGE / "engine" / "__init__.py" in files or PACKAGE / "engine.py" in files
    assert not any("stages" in p.parts for p in files) and PACKAGE / "cli.py" not in files
    assert PACKAGE / "study_design.py" in files and PACKAGE / "study_report.py" in files  # library, not drivers
    assert _offenders(files, ("pcrl.cli", "pcrl.stages", "pcrl.study")) == {}


def test_the_study_driver_never_imports_the_cli() -> None:
    assert _offenders([PACKAGE / "study.py"], ("pcrl.cli",)) == {}


def test_stage_drivers_never_import_the_cli() -> None:
    stages = sorted((PACKAGE / "stages").glob("*.py"))
    assert len(stages) >= 8
    assert _offenders(stages, ("pcrl.cli",)) == {}


def test_the_checker_finds_a_forbidden_import(tmp_path: Path) -> None:
    """The rule itself can fail: a lazy import of the CLI inside a function is found."""
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from pcrl.cli import main\n    import pcrl.stages.report\n")
    assert imported_modules(module) >= {"pcrl.cli", "pcrl.cli.main", "pcrl.stages.report"}
    hits = {m for m in imported_modules(module) if m.startswith(("pcrl.cli", "pcrl.stages"))}
    assert hits


def test_every_stage_names_the_module_that_implements_it() -> None:
    """One hop from the DAG to the code: stage ``X`` runs ``pcrl x``, implemented by
    ``pcrl/stages/x.py``, and its ``desc`` in dvc.yaml names that file."""
    import yaml

    stages = yaml.safe_load((PACKAGE.parent / "dvc.yaml").read_text())["stages"]
    assert len(stages) >= 10
    for name, stage in stages.items():
        body = stage.get("do", stage)
        command = body["cmd"].split()
        assert command[0] == "pcrl", name
        module = f"pcrl/stages/{command[1].replace('-', '_')}.py"
        assert (PACKAGE.parent / module).is_file(), (name, module)
        assert module in body["desc"], f"{name}: desc does not name {module}"
