"""What is stale, decided once for both runners: by dvc.lock (docs/design.md, principle 1).

DVC records in dvc.lock the content hash of every dep, param and out of each stage it
built; a Snakemake run records there too (:func:`pcrl.runners.dag.record_in_dvc`). So
dvc.lock knows what was built from what, whichever runner built it, while Snakemake's own
metadata (``.snakemake/metadata``) knows only Snakemake's runs and judges by timestamps
that a ``git checkout`` or a DVC rerun with identical outputs moves. The Snakefile
therefore takes staleness from here: every rule's inputs are ``ancient()`` (timestamps
ignored), its other rerun triggers are off (``profiles/default``), and a stage DVC reports
as changed gets one extra input, a stamp that a local rule writes (:data:`STAMP_FOLDER`),
so Snakemake reruns it and, like DVC, whatever reads its outputs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcrl.runners.dag import GATES, lies_inside

if TYPE_CHECKING:
    from pcrl.runners.dag import Stage


#: Where the Snakefile's stamps for stages stale by dvc.lock live (one empty file a rule).
STAMP_FOLDER = ".snakemake/pcrl-stale"


def describe_change(entries: Iterable[Any]) -> str:
    """DVC's status entries of one stage as a short reason
    (``params pretrain.moco.temperature; deps pcrl/cli.py``)."""
    parts = []
    for entry in entries:
        if isinstance(entry, str):
            parts.append(entry)  # e.g. "always changed"
            continue
        for kind, changed in entry.items():
            what = kind.removeprefix("changed ")
            names: list[str] = []
            for path, value in (changed or {}).items():
                if isinstance(value, dict):  # params: {params.yaml: {key: "modified"}}
                    names.extend(value)
                else:
                    names.append(path)
            parts.append(f"{what} {', '.join(sorted(names))}" if names else what)
    return "; ".join(parts) or "changed"


def dvc_changes(root: str | Path = ".") -> dict[str, str]:
    """Stage name -> why DVC reports it changed against dvc.lock (deps, params or outs).

    Raises whatever DVC raises when it cannot tell (a ``dvc repro`` holding the lock, no
    DVC repository); the caller says so rather than planning from half the picture.
    """
    from dvc.repo import Repo  # heavy import: only when a plan is made

    with Repo(str(root)) as repo:
        status = repo.status()
    return {name: describe_change(entries) for name, entries in status.items()}


def downstream(names: Iterable[str], deps: Mapping[str, Iterable[str]], outs: Mapping[str, Iterable[str]],
               gates: Iterable[str] = GATES) -> set[str]:
    """``names`` and every stage that reads, directly or not, what one of them writes.

    ``deps`` and ``outs`` map each stage to its file deps and outs; a dep is read from an
    out when it is that out or lies inside or above it, unless the out is one of
    ``gates``. This is the set a rerun of ``names`` makes stale: what Snakemake plans, and
    what ``dvc repro`` reruns when the rerun outputs differ (DVC skips a stage whose deps
    came back identical).
    """
    closed = {g.rstrip("/") for g in gates}

    def reads(dep: str, out: str) -> bool:
        dep, out = dep.rstrip("/"), out.rstrip("/")
        if out in closed:
            return False
        return dep == out or lies_inside(dep, out) or lies_inside(out, dep)

    readers = {
        name: {other for other, other_deps in deps.items() if any(reads(d, o) for d in other_deps for o in outs[name])}
        for name in outs
    }
    found, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(readers.get(name, ()))
    return found


@dataclass(frozen=True)
class LockPlan:
    """What dvc.lock says must run: the stages DVC reports changed and their readers."""

    changed: dict[str, str]  # stage name -> DVC's reason
    stale: frozenset[str]  # changed and every stage downstream of them

    def describe(self) -> str:
        """One line for the log: what is stale and why."""
        if not self.changed:
            return "dvc.lock: every stage is up to date with its deps, params and outs"
        why = "; ".join(f"{name} ({reason})" for name, reason in sorted(self.changed.items()))
        return f"dvc.lock: {len(self.stale)} stage(s) to run; changed: {why}"

    def stamp(self, stage: Stage, folder: str | Path) -> str:
        """Write and return the stamp of a stale ``stage``: an input newer than its outputs.

        Its text names this plan (a nanosecond clock) and the reason: Snakemake skips an
        input newer than the outputs whose checksum it recorded last time, which an empty
        file, or one with the same text, would repeat.
        """
        path = Path(folder) / stage.rule_name
        path.parent.mkdir(parents=True, exist_ok=True)
        reason = self.changed.get(stage.name, "reads the output of a stage that changed")
        path.write_text(f"{time.time_ns()} {stage.name}: {reason}\n")
        return str(path)


def plan_from_lock(stages: Sequence[Stage], root: str | Path = ".") -> LockPlan:
    """The plan dvc.lock implies for ``stages`` (:func:`dvc_changes`, :func:`downstream`).

    The params check's stage (:data:`pcrl.runners.dag.GATES`) is left out of ``stale``: the
    Snakefile has run the same check while parsing, and records it in dvc.lock at the end.
    """
    changed = dvc_changes(root)
    deps = {st.name: list(st.deps) for st in stages}
    outs = {st.name: list(st.outs) for st in stages}
    gates = {st.name for st in stages if st.outs and set(st.outs) <= set(GATES)}
    return LockPlan(changed=changed, stale=frozenset(downstream(changed, deps, outs) - gates))
