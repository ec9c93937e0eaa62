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


#: Above the library: the CLI, the stage drivers and the runners' glue (docs/architecture.md).
DRIVERS = ("cli.py",)
ABOVE = ("stages", "runners")


def library_files() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py"))
            if not (p.parent == PACKAGE and p.name in DRIVERS)
            if not set(ABOVE) & set(p.relative_to(PACKAGE).parts)]


def test_the_library_never_imports_the_cli_the_stages_or_the_runners() -> None:
    files = library_files()
    assert PACKAGE / "engine" / "__init__.py" in files and PACKAGE / "settings.py" in files
    assert not any(set(ABOVE) & set(p.parts) for p in files) and PACKAGE / "cli.py" not in files
    assert PACKAGE / "study_design.py" in files and PACKAGE / "study_report.py" in files  # library, not drivers
    assert _offenders(files, ("pcrl.cli", "pcrl.stages", "pcrl.runners")) == {}


def test_the_runners_never_import_the_cli() -> None:
    runners = sorted((PACKAGE / "runners").glob("*.py"))
    assert {p.name for p in runners} >= {"dag.py", "preflight.py", "study.py"}
    assert _offenders(runners, ("pcrl.cli",)) == {}


def test_stage_drivers_never_import_the_cli_or_the_runners() -> None:
    """A stage is callable from Python, and the runners' glue is no stage's code dep."""
    stages = sorted((PACKAGE / "stages").glob("*.py"))
    assert len(stages) >= 8
    assert _offenders(stages, ("pcrl.cli", "pcrl.runners")) == {}
    assert _offenders([PACKAGE / "cli.py"], ("pcrl.runners",)) == {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """pcrl module -> the pcrl modules it imports (lazy imports too; ``from a.b import c``
    counts as a.b.c when that is a module, else a.b)."""
    modules = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    graph = {}
    for name, path in modules.items():
        targets = {m for m in imported_modules(path) if m in modules}
        graph[name] = {t for t in targets if t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle() -> None:
    """Modules form layers: no two import each other, directly or through others (a
    package's ``__init__`` re-exporting its modules counts only where a module imports the
    package itself)."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check can fail
    assert cycles(import_graph()) == []


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(PACKAGE.parent)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_evaluation_never_imports_fine_tuning() -> None:
    """Scoring and the probe read data through the readers below both, not fine-tuning's."""
    assert _offenders(sorted((PACKAGE / "evaluation").glob("*.py")), ("pcrl.finetune",)) == {}


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


#: The rows of docs/architecture.md "Layers": a module may import its own row and the rows below.
ROWS: dict[str, int] = {
    **dict.fromkeys(("settings", "tasks", "config", "resources", "errors", "atomic", "outputs", "run_state",
                     "torchfile", "hashing", "records", "seeding", "momentum_rule", "provenance", "previews",
                     "plotting", "live_series"), 0),
    **dict.fromkeys(("io", "transforms", "distributed"), 1),
    **dict.fromkeys(("networks", "engine", "datasets", "launch"), 2),
    **dict.fromkeys(("methods", "preprocessing", "phantom"), 3),
    **dict.fromkeys(("finetune", "evaluation", "report", "study_design", "study_report", "release", "hub"), 4),
    "stages": 5,
    **dict.fromkeys(("cli", "runners"), 6),
}


def row_of(module: str) -> int | None:
    """The row of ``pcrl.<top>...`` (None for the package ``pcrl`` itself)."""
    parts = module.split(".")
    return ROWS[parts[1]] if len(parts) > 1 else None


def test_every_module_sits_in_a_row_and_imports_only_its_row_and_below() -> None:
    graph = import_graph()
    unplaced = sorted({m.split(".")[1] for m in graph if "." in m and m.split(".")[1] not in ROWS})
    assert unplaced == [], "place these in ROWS and in docs/architecture.md"
    upward = sorted((m, t) for m, targets in graph.items() for t in targets
                    if row_of(m) is not None and row_of(t) is not None and row_of(t) > row_of(m))  # type: ignore[operator]
    assert upward == []
