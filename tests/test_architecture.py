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


def module_graph() -> dict[str, set[str]]:
    """Each pcrl module's name -> the pcrl modules it imports (lazy imports included)."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return {name: {m for m in imported_modules(path) if m in files and m != name}
            for name, path in files.items()}


def import_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or [] when it has none (depth-first)."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return []
        for target in sorted(graph[node]):
            cycle = visit(target, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return []

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return []


def test_no_pcrl_modules_import_each_other() -> None:
    """Modules form layers: no module imports itself through others (e.g. pcrl.atomic and
    pcrl.outputs once imported each other inside functions)."""
    graph = module_graph()
    assert {"pcrl.atomic", "pcrl.outputs", "pcrl.engine.trainer"} <= set(graph)
    assert "pcrl.outputs" in graph["pcrl.atomic"]
    assert import_cycle(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
