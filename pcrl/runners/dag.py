"""The pipeline's DAG as DVC parses it, for the Snakefile (docs/design.md, principle 1).

dvc.yaml owns the stages; DVC's parser resolves its ``foreach`` fan-out and ``${...}``
interpolation from params.yaml, and this module hands the resolved stages to Snakemake
so both runners see the same commands, deps and outs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from pcrl.errors import ConfigError

PARAMS_FILE = "params.yaml"
#: Outputs that are the same whatever the params: ``pcrl check-params``'s folder. DVC runs
#: the check first (every download depends on it, and it on every params section); a
#: rerun that passes changes nothing its readers read, so it makes none of them stale
#: (pcrl/runners/staleness.py). Snakemake runs the same check while it parses the
#: Snakefile, before any job; rerunning the rule as well would only hide its readers from
#: Snakemake's planning (a rerun job masks every job downstream of it), so the Snakefile
#: records the check in dvc.lock itself once the params passed (:func:`record_in_dvc`).
GATES = ("data/params",)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One resolved DVC stage."""

    name: str  # DVC's name, e.g. "resample@luna16"
    cmd: str
    deps: tuple[str, ...]  # file/folder deps (params excluded)
    params: tuple[str, ...]  # dotted params.yaml keys
    outs: tuple[str, ...]
    desc: str = ""
    #: Snakemake's inputs where they differ from ``deps`` (see :func:`gather_inputs`).
    gathered: tuple[str, ...] | None = None

    @property
    def group(self) -> str:
        """The stage's name in dvc.yaml before fan-out (``resample``)."""
        return self.name.split("@", 1)[0]

    @property
    def rule_name(self) -> str:
        """A valid Snakemake rule name (``resample_luna16``)."""
        return re.sub(r"\W", "_", self.name.replace("@", "_"))

    @property
    def inputs(self) -> list[str]:
        """Snakemake's inputs: the deps, a gathering folder replaced by the outputs in it."""
        return list(self.deps if self.gathered is None else self.gathered)

    @property
    def shell_command(self) -> str:
        """The command with braces escaped for Snakemake's formatter."""
        return self.cmd.replace("{", "{{").replace("}", "}}")

    def param_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """The values of this stage's params, so Snakemake reruns a stage when they change."""
        values = {}
        for key in self.params:
            node: Any = params
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    raise ConfigError(f"{PARAMS_FILE}: stage {self.name} needs missing key {key}")
                node = node[part]
            values[key] = node
        return values


def load_stages(root: str | Path = ".") -> list[Stage]:
    """The stages of ``root/dvc.yaml`` resolved by DVC (fan-out and interpolation done)."""
    from dvc.repo import Repo  # heavy import: only when the DAG is needed

    stages = []
    with Repo(str(root)) as repo:
        for st in repo.index.stages:
            if not st.cmd:
                continue  # a .dvc file tracking data, not a pipeline stage
            params: list[str] = []
            deps: list[str] = []
            for dep in st.deps:
                if getattr(dep, "params", None) is not None:
                    params.extend(dep.params)
                else:
                    deps.append(dep.def_path)
            cmd = st.cmd if isinstance(st.cmd, str) else " && ".join(st.cmd)
            stages.append(
                Stage(
                    name=st.name,
                    cmd=cmd,
                    deps=tuple(deps),
                    params=tuple(params),
                    outs=tuple(o.def_path for o in st.outs),
                    desc=st.desc or st.name,
                )
            )
    return gather_inputs(stages)


def lies_inside(path: str, folder: str) -> bool:
    """Whether ``path`` lies below ``folder`` (both relative to the repository, no trailing slash needed)."""
    return path.startswith(folder.rstrip("/") + "/")


def gather_inputs(stages: list[Stage]) -> list[Stage]:
    """Resolve deps for Snakemake, whose rules output whole folders (``directory()``):

    - a *gathering* dep, a folder holding other stages' outputs (e.g. ``data/evaluate`` for
      the report over every evaluate stage of a DVC ``matrix``), depends for DVC on all of
      them; Snakemake needs them listed, so the inputs list those outputs instead;
    - a dep *inside* another stage's output (``data/pretrain/pcrl/weights.pt``: DVC then
      reruns the stage only when that file changes, not when the folder's wall-clock logs
      do) is, for Snakemake, that output folder.
    """
    outs = [o for st in stages for o in st.outs]

    def inputs_of(dep: str) -> list[str]:
        holder = [o for o in outs if lies_inside(dep, o)]
        return holder or [o for o in outs if lies_inside(o, dep)] or [dep]

    resolved = []
    for st in stages:
        inputs = list(dict.fromkeys(i for dep in st.deps for i in inputs_of(dep)))
        changed = tuple(inputs) != st.deps
        resolved.append(dataclasses.replace(st, gathered=tuple(inputs)) if changed else st)
    return resolved


def built_since(stage: Stage, started: float, root: Path) -> bool:
    """Whether every output of ``stage`` was written at or after ``started`` (a Unix time).

    A stage's output folder appears by a rename of the folder it was built in
    (:func:`pcrl.atomic.atomic_dir`), whose modification time is that of its last entry,
    written by the job; an output left from an earlier run is older.
    """
    outs = [root / o for o in stage.outs]
    return bool(outs) and all(o.exists() and o.stat().st_mtime >= started for o in outs)


def record_in_dvc(stages: list[Stage], root: str | Path = ".", *, started: float) -> list[str]:
    """Record in dvc.lock (``dvc commit``) the stages a Snakemake run built.

    Called by the Snakefile's ``onsuccess`` and ``onerror`` handlers, so that after a cluster run
    ``dvc repro`` finds everything up to date and ``dvc metrics diff`` compares with the
    previous commit. Only the stages whose outputs this run wrote (at or after
    ``started``, the run's start) are committed: those ran with the current params and
    deps. An output left from an earlier run, stale after a params edit, is not recorded
    as current. The params check (:data:`GATES`) is committed whenever its folder exists:
    the Snakefile ran the same check on the current params before any job. Set
    ``PCRL_NO_DVC_COMMIT=1`` to skip. Returns the committed stage names.
    """
    if os.environ.get("PCRL_NO_DVC_COMMIT") == "1":
        return []
    root = Path(root)
    done = [s.name for s in stages if built_since(s, started, root)
            or (set(s.outs) <= set(GATES) and all((root / o).is_dir() for o in s.outs))]
    if not done:
        return []
    # `dvc commit` builds the pipeline's graph once per named stage (~4 s each for the demo's
    # 71); with every stage built, one commit of the whole pipeline is the same and ~12x faster
    targets = [] if len(done) == len(stages) else done
    proc = subprocess.run(["dvc", "commit", "--force", "--quiet", *targets], cwd=root, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        log.warning("dvc commit failed (outputs not recorded in dvc.lock): %s", proc.stderr.strip())
        return []
    return done
