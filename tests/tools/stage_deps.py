"""Print the code deps each ``pcrl`` command needs in dvc.yaml, as tests/test_dag_deps.py
computes them (every pcrl module the command imports, folders where all their files are).

Usage, from the repository root: ``python tests/tools/stage_deps.py download pretrain ...``
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_dag_deps import REPO, stage_code  # noqa: E402 - after the path set-up


def code_deps(command: str) -> list[str]:
    """The stage's code deps: files, or their folder when every file of it is needed."""
    files = sorted(str(p.relative_to(REPO)) for p in stage_code(command))
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


if __name__ == "__main__":
    for command in sys.argv[1:]:
        print(f"{command}:")
        print("\n".join(f"  - {dep}" for dep in code_deps(command)))
