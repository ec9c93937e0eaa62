"""dvc.yaml declares the code of every stage: each module of ``pcrl/`` that the stage's
command imports, directly or through other modules (lazy imports included), is covered by
one of the stage's deps, so a change of that code reruns the stage.

The imports are found by parsing the source (an independent reading of the code, not of
dvc.yaml), starting from the CLI and the stage's driver module ``pcrl/stages/<command>.py``.
``python tests/tools/stage_deps.py <command>`` prints the deps a stage needs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """The source file of the ``pcrl`` module ``name``, or None when it is not one."""
    parts = name.split(".")
    if parts[0] != "pcrl":
        return None
    base = REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _node_imports(nodes: list[ast.AST]) -> set[str]:
    names = set()
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


#: Functions of pcrl/cli.py that run for every stage.
CLI_COMMON = ("main", "check_stage_paths", "build_parser")
TRAINING = ("pretrain", "finetune")


def cli_imports(command: str) -> set[str]:
    """What ``pcrl <command>`` imports in the CLI: its module-level imports, the functions
    every command runs, and the command's own ``cmd_<command>``."""
    tree = ast.parse((REPO / "pcrl" / "cli.py").read_text())
    wanted = {*CLI_COMMON, f"cmd_{command.replace('-', '_')}"}
    if command in TRAINING:
        wanted.add("relaunched")  # one torchrun worker per GPU
    nodes = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    nodes += [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    assert f"cmd_{command.replace('-', '_')}" in {getattr(n, "name", "") for n in tree.body}
    return _node_imports(nodes)


def closure(roots: list[Path], *, seed_imports: set[str] = frozenset()) -> set[Path]:
    """Every pcrl source file reached from ``roots`` (and ``seed_imports``) by imports,
    with the ``__init__.py`` of every package on the way (Python runs them)."""
    seen: set[Path] = set()
    todo = [f for n in seed_imports if (f := module_file(n))]
    seen |= set(roots)  # the roots' own imports are given by seed_imports
    todo += [REPO.joinpath(*r.relative_to(REPO).parts[:i], "__init__.py")
             for r in roots for i in range(1, len(r.relative_to(REPO).parts))
             if REPO.joinpath(*r.relative_to(REPO).parts[:i], "__init__.py").is_file()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        rel = path.relative_to(REPO).with_suffix("")
        for i in range(1, len(rel.parts)):
            init = REPO.joinpath(*rel.parts[:i], "__init__.py")
            if init.is_file():
                todo.append(init)
        tree = ast.parse(path.read_text(), filename=str(path))
        todo += [f for name in _node_imports([tree]) if (f := module_file(name))]
    return seen


#: Commands that import the module of their task's kind by name (:mod:`pcrl.stages.kinds`).
BY_KIND = ("finetune", "evaluate")


def stage_code(command: str, task: str | None = None) -> set[Path]:
    """The pcrl files ``pcrl <command> [--task <task>]`` runs: the CLI and what it imports
    for this command (:func:`cli_imports`), the module of the task's kind where the command
    picks it by name, with everything those import."""
    seeds = cli_imports(command)
    if command in BY_KIND and task is not None:
        from pcrl.tasks import get_task

        seeds = {*seeds, f"pcrl.stages.kinds.{get_task(task).kind}"}
    return closure([REPO / "pcrl" / "cli.py"], seed_imports=seeds)


def command_of(cmd: str) -> tuple[str, str | None]:
    """``(command, task)`` of a stage's ``pcrl ...`` command line (task None without ``--task``)."""
    words = cmd.split()
    task = words[words.index("--task") + 1] if "--task" in words else None
    return words[1], task if task and "${" not in task else None


def stages() -> dict[str, dict]:
    """dvc.yaml's stages, read as plain YAML (``foreach`` bodies under ``do``)."""
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in raw.items()}


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_imported_module_is_a_declared_dep(name: str) -> None:
    stage = stages()[name]
    command, task = command_of(stage["cmd"])
    deps = [d for d in stage.get("deps", []) if "${" not in d]
    missing = sorted(str(p.relative_to(REPO)) for p in stage_code(command, task) if not covered(p, deps))
    assert not missing, f"stage {name} ({command}) runs code it does not declare: {missing}"


@pytest.mark.parametrize("name", sorted(stages()))
def test_no_stage_declares_code_it_does_not_run(name: str) -> None:
    """A change to code a stage never imports reruns nothing: its ``pcrl/`` deps are
    exactly its code (``python tests/tools/stage_deps.py --write`` writes them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("stage_deps", REPO / "tests" / "tools" / "stage_deps.py")
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    stage = stages()[name]
    declared = [d for d in stage.get("deps", []) if d.startswith("pcrl/")]
    assert declared == tool.code_deps(*command_of(stage["cmd"])), name


def test_a_3d_fine_tune_neither_runs_nor_depends_on_the_2d_code() -> None:
    for task in ("ncc", "lcs", "bms"):
        for command in BY_KIND:
            files = {str(p.relative_to(REPO)) for p in stage_code(command, task)}
            assert "pcrl/preprocessing/chest_labels.py" not in files and "pcrl/stages/kinds/multilabel.py" not in files
    chest = {str(p.relative_to(REPO)) for p in stage_code("finetune", "chest14")}
    assert "pcrl/preprocessing/chest_labels.py" in chest and "pcrl/finetune/datasets.py" not in chest


def test_the_closure_follows_lazy_and_transitive_imports() -> None:
    """The checker itself: the pretrain driver reaches the engine's trainer through the
    engine package, and the networks through the methods; the download driver reaches the
    phantom generators only through a lazy import inside a function."""
    pretrain = {str(p.relative_to(REPO)) for p in stage_code("pretrain")}
    assert "pcrl/engine/trainer.py" in pretrain and "pcrl/networks/unet3d.py" in pretrain
    assert "pcrl/stages/download.py" not in pretrain
    download = {str(p.relative_to(REPO)) for p in stage_code("download")}
    assert "pcrl/phantom/luna16.py" in download and "pcrl/outputs.py" in download
    assert "pcrl/engine/trainer.py" not in download
