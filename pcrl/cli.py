"""The ``pcrl`` command: one subcommand per pipeline stage.

DESIGN.md principle 4: the CLI is the only reader of paths and params.yaml; it turns
params sections into library arguments and library errors into one line on stderr and
exit code 2 (``PcrlError``), or 143 when a job was preempted and checkpointed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pcrl.config import DEFAULT_PARAMS, load_params, section
from pcrl.errors import PcrlError

log = logging.getLogger("pcrl")

EXIT_ERROR = 2


def available_cpus() -> int:
    """CPUs this job may use: SLURM's allocation, else the process's CPU affinity."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        return max(1, int(slurm))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------- stages


def cmd_download(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Fetch, generate or verify one dataset and write its manifest."""
    from pcrl.stages.download import run_download

    run_download(
        args.dataset,
        section(params, "data"),
        out=Path(args.out),
        progress=not args.no_progress,
    )


def cmd_resample(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Resample every case of one dataset."""
    from pcrl.stages.resample import run_resample

    run_resample(
        section(params, "resample", args.dataset),
        raw=Path(args.raw),
        out=Path(args.out),
        workers=args.workers or available_cpus(),
        progress=not args.no_progress,
    )


def cmd_cubes(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Splits, label fractions and cubes of one task."""
    from pcrl.stages.cubes import run_cubes

    cubes = section(params, "cubes")
    run_cubes(
        args.task,
        section(cubes, args.task),
        seed=cubes["seed"],
        raw=Path(args.raw),
        interim=Path(args.interim),
        out=Path(args.out),
        progress=not args.no_progress,
    )


def cmd_pretrain(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Pretrain one method on the PCRL pairs (resumes from its state folder)."""
    from pcrl.stages.pretrain import run_pretrain

    settings = section(params, "pretrain")
    if args.method not in settings["methods"]:
        log.warning("method %s is not listed in pretrain.methods", args.method)
    run_pretrain(
        args.method,
        settings,
        pairs=Path(args.pairs),
        out=Path(args.out),
        state=Path(args.state),
        device=args.device,
        num_workers=args.workers if args.workers >= 0 else min(4, available_cpus() - 1),
        progress=not args.no_progress,
    )


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pcrl",
        description="PCRL pretraining pipeline (Zhou et al., ICCV 2021): one subcommand per stage.",
    )
    parser.add_argument(
        "--params", default=str(DEFAULT_PARAMS), help="params file (default: %(default)s)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")

    def add(name: str, func: Callable, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=func.__doc__)
        p.set_defaults(func=func)
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        return p

    datasets = ["luna16", "msd_liver", "msd_brain", "chestxray14"]
    p = add("download", cmd_download, "fetch/generate/verify a dataset (params: data)")
    p.add_argument("--dataset", required=True, choices=datasets)
    p.add_argument("--out", required=True, help="output folder, e.g. data/raw/luna16")

    p = add("resample", cmd_resample, "resample a dataset (params: resample.<dataset>)")
    p.add_argument("--dataset", required=True, choices=datasets)
    p.add_argument("--raw", required=True, help="download stage output (holds manifest.json)")
    p.add_argument("--out", required=True, help="output folder, e.g. data/interim/luna16")
    p.add_argument(
        "--workers", type=int, default=0, help="parallel cases (default: the CPUs allotted)"
    )

    p = add("cubes", cmd_cubes, "splits, fractions and cubes of a task (params: cubes.<task>)")
    p.add_argument("--task", required=True, choices=["pretrain", "ncc", "lcs", "bms"])
    p.add_argument("--raw", required=True, help="download stage output of the task's dataset")
    p.add_argument("--interim", required=True, help="resample stage output of the task's dataset")
    p.add_argument("--out", required=True, help="output folder, e.g. data/processed/ncc")

    p = add("pretrain", cmd_pretrain, "pretrain one method (params: pretrain)")
    p.add_argument("--method", required=True, choices=["pcrl", "genesis", "moco"])
    p.add_argument("--pairs", required=True, help="cubes@pretrain output (data/processed/pretrain)")
    p.add_argument("--out", required=True, help="output folder, e.g. data/pretrain/pcrl")
    p.add_argument("--state", required=True, help="resumable state folder (checkpoints), kept across reruns")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--workers", type=int, default=-1, help="DataLoader workers (default: from the CPUs allotted)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        params = load_params(args.params)
        args.func(args, params)
    except PcrlError as exc:
        print(f"pcrl {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a preempted job: checkpointed, rerun resumes
        from pcrl.engine import Preempted

        if not isinstance(exc, Preempted):
            raise
        print(f"pcrl {args.command}: preempted ({exc}); rerun to resume", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"pcrl {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
