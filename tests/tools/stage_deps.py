"""Print the code deps each ``pcrl`` command needs in dvc.yaml, as tests/test_dag_deps.py
computes them (every pcrl module the command imports, folders where all their files are).

Usage, from the repository root: ``python tests/tools/stage_deps.py download pretrain ...``;
``python tests/tools/stage_deps.py --write`` replaces the ``pcrl/`` deps of every stage of
dvc.yaml with what its command needs (the rest of the file is left as it is).
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_dag_deps import REPO, command_of, stage_code  # noqa: E402 - after the path set-up


def code_deps(command: str, task: str | None = None) -> list[str]:
    """The stage's code deps: files, or their folder when every file of it is needed."""
    files = sorted(str(p.relative_to(REPO)) for p in stage_code(command, task))
    files.append("pcrl/schemas/params.schema.yaml")
    by_folder: dict[str, list[str]] = defaultdict(list)
    for name in files:
        by_folder[str(Path(name).parent)].append(name)
    deps: list[str] = []
    for folder, names in sorted(by_folder.items()):
        present = {str(p.relative_to(REPO)) for p in (REPO / folder).glob("*")
                   if p.is_file() and p.suffix in (".py", ".yaml")}
        deps += [folder] if folder != "pcrl" and present <= set(names) else names
    return deps


def rewrite(text: str) -> str:
    """dvc.yaml with each stage's run of ``- pcrl/...`` deps replaced by its command's."""
    lines, out = text.splitlines(), []
    command: tuple[str, str | None] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        found = re.match(r"\s*cmd: (pcrl .*)", line)
        if found:
            command = command_of(found.group(1))
        dep = re.match(r"(\s*)- pcrl/", line)
        if dep and command:
            while i < len(lines) and re.match(r"\s*- pcrl/", lines[i]):
                i += 1
            out += [f"{dep.group(1)}- {d}" for d in code_deps(*command)]
            command = None
            continue
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        path = REPO / "dvc.yaml"
        path.write_text(rewrite(path.read_text()))
        sys.exit(0)
    for command in sys.argv[1:]:
        print(f"{command}:")
        print("\n".join(f"  - {dep}" for dep in code_deps(command)))
