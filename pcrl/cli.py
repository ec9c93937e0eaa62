"""The ``pcrl`` command: one subcommand per pipeline stage.

docs/design.md, principle 4: the CLI is the only reader of paths and params.yaml; it turns
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

from pcrl.atomic import write_errors
from pcrl.config import DEFAULT_PARAMS, load_params, section, source_of
from pcrl.errors import PcrlError, PreemptedError
from pcrl.outputs import check_stage_paths
from pcrl.resources import available_cpus, configure_threads, device_option
from pcrl.settings import SETTINGS, get_setting, setting_of_task

log = logging.getLogger("pcrl")

EXIT_ERROR = 2


# --------------------------------------------------------------------------- stages


def cmd_download(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Fetch, generate or verify one dataset and write its manifest."""
    from pcrl.stages.download import run_download

    data = section(params, "data")
    run_download(
        args.dataset,
        data,
        out=Path(args.out),
        shard=_shard(args, data),
        progress=not args.no_progress,
    )


def _shard(args: argparse.Namespace, data: dict[str, Any]) -> tuple[int, int]:
    """``(k, n)`` of ``--shard k`` among ``data.shards`` (the whole dataset without it)."""
    from pcrl.datasets.shards import check_shard

    if args.shard is None:
        return (0, 1)
    return check_shard(args.shard, data.get("shards", [0]))


def cmd_check_params(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Validate params.yaml before any stage runs (the CLI has read it: schema and cross-references)."""
    from pcrl.stages.check_params import momentum_warnings, run_check_params

    run_check_params(section(params, "data"), out=Path(args.out))
    for warning in momentum_warnings(params):  # warnings only: the data settings written are unchanged
        log.warning("%s", warning)


def cmd_resample(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Resample every case of one dataset."""
    from pcrl.stages.resample import run_resample

    data = section(params, "data")  # the dataset named and every configured download shard are checked
    run_resample(section(params, "resample", args.dataset), raw=Path(args.raw), out=Path(args.out),
                 shard=_shard(args, data), workers=args.workers or available_cpus(), progress=not args.no_progress,
                 dataset=args.dataset, shards=len(data.get("shards", [0])))


def cmd_cubes(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Splits, label fractions and cubes of one task."""
    from pcrl.stages.cubes import run_cubes

    cubes = section(params, "cubes")
    run_cubes(args.task, section(cubes, args.task), seed=cubes["seed"], raw=Path(args.raw),
              interim=Path(args.interim), out=Path(args.out), progress=not args.no_progress,
              shards=len(section(params, "data").get("shards", [0])))


def cmd_pretrain(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Pretrain one method on the PCRL pairs (resumes from its state folder)."""
    from pcrl.stages.pretrain import run_pretrain

    setting = get_setting(args.setting)
    settings = setting.pretrain_params(params)
    if args.method not in settings["methods"]:
        log.warning("method %s is not listed in %s", args.method, setting.methods_key())
    run_pretrain(
        args.method,
        settings,
        pairs=Path(args.pairs),
        out=Path(args.out),
        state=Path(args.state),
        device=args.device,
        num_workers=args.workers if args.workers >= 0 else min(4, available_cpus() - 1),
        progress=not args.no_progress,
        probe=Path(args.probe) if args.probe else None,
        probe_settings=section(params, "probe"),
    )


def cmd_probe(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Frozen-encoder probe of every initialisation at every label fraction (NCC test AUC)."""
    from pcrl.stages.probe import run_probe

    run_probe(
        section(params, "finetune"),
        section(params, "probe"),
        pretrained=Path(args.pretrained),
        processed=Path(args.processed),
        out=Path(args.out),
    )


def cmd_init_weights(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Write an initialisation no pretraining writes: scratch, or an external checkpoint."""
    from pcrl.stages.init_weights import run_init_weights

    setting = get_setting(args.setting)
    if args.checkpoint is not None and setting.externals(section(params, "finetune")).get(args.init) != args.checkpoint:
        log.warning("%s does not map %s to %s", setting.external_key, args.init, args.checkpoint)
    run_init_weights(
        args.init,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        out=Path(args.out),
        setting=setting,
        resample=section(params, "resample", setting.pretrain_dataset)
        if args.checkpoint and Path(args.checkpoint).is_dir() else None,
    )


def cmd_export(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Export a pretrained encoder: safetensors, config, adaptation plan, model card."""
    from pcrl.stages.export import run_export

    setting = get_setting(args.setting)
    dataset = setting.pretrain_dataset
    run_export(args.method, setting=setting, weights=Path(args.weights), out=Path(args.out),
               resample=section(params, "resample", dataset),
               cube_size=section(params, "cubes", setting.pretrain_task)["cube_size"],
               source=source_of(section(params, "data"), dataset), pairs=Path(args.pairs) if args.pairs else None)


def cmd_finetune(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Fine-tune one task from one initialisation, label fraction and seed (resumable)."""
    from pcrl.stages.finetune import run_finetune

    settings = section(params, "finetune")
    section(settings, args.task)
    setting = setting_of_task(args.task)
    if args.init not in setting.inits(settings):
        log.warning("init %s is not listed in %s", args.init, setting.inits_key)
    run_finetune(
        args.task,
        args.init,
        args.fraction,
        args.seed,
        settings,
        processed=Path(args.processed),
        interim=Path(args.interim) if args.interim else None,
        weights=Path(args.weights),
        out=Path(args.out),
        state=Path(args.state),
        device=args.device,
        num_workers=args.workers if args.workers >= 1 else max(1, min(4, available_cpus() - 1)),
        progress=not args.no_progress,
    )


def cmd_evaluate(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Score one fine-tuned model on its task's test split."""
    from pcrl.stages.evaluate import run_evaluate

    run_evaluate(
        args.task,
        section(params, "evaluate"),
        model_dir=Path(args.model),
        processed=Path(args.processed),
        interim=Path(args.interim) if args.interim else None,
        out=Path(args.out),
        record_out=Path(args.record) if args.record else None,
        device=args.device,
    )


def cmd_report(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """Tables, verdict and plots over every evaluated run."""
    from pcrl.report.context import report_context
    from pcrl.stages.report import run_report

    run_report(
        section(params, "finetune"),
        section(params, "report"),
        evaluations=Path(args.evaluations),
        out=Path(args.out),
        probe=Path(args.probe) if args.probe else None,
        finetuned=Path(args.finetuned) if args.finetuned else None,
        pretrained=Path(args.pretrained) if args.pretrained else None,
        context=report_context(section(params, "data"), params_file=Path(args.params), lock_file=Path("dvc.lock"),
                               repo=Path(args.params).resolve().parent),
    )


# --------------------------------------------------------------------------- parser


#: The downstream tasks (``finetune`` and ``evaluate`` choices) and the cubes stage's tasks.
_DOWNSTREAM_TASKS = [task for setting in SETTINGS.values() for task in setting.tasks]
_CUBES_TASKS = [task for setting in SETTINGS.values() for task in setting.cubes_tasks]


def _add_stage(sub: argparse._SubParsersAction, name: str, func: Callable,
               help_: str) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` running ``func`` (``func.__doc__`` as its description)."""
    p = sub.add_parser(name, help=help_, description=func.__doc__)
    p.set_defaults(func=func)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _add_data_stages(sub: argparse._SubParsersAction) -> None:
    """check-params, download, resample and cubes: the stages before any training."""
    p = _add_stage(sub, "check-params", cmd_check_params,
                   "validate params.yaml before any stage runs")
    p.add_argument("--out", required=True, help="output folder, e.g. data/params")

    datasets = ["luna16", "msd_liver", "msd_brain", "chestxray14"]
    p = _add_stage(sub, "download", cmd_download, "fetch/generate/verify a dataset (params: data)")
    p.add_argument("--dataset", required=True, choices=datasets)
    p.add_argument("--out", required=True, help="output folder, e.g. data/raw/luna16/0")
    p.add_argument("--shard", type=int, help="download shard k of data.shards (default: all of it)")

    p = _add_stage(sub, "resample", cmd_resample,
                   "resample a dataset (params: resample.<dataset>)")
    p.add_argument("--dataset", required=True, choices=datasets)
    p.add_argument("--raw", required=True,
                   help="download stage output: manifest.json, or a folder per shard (data/raw/luna16)")
    p.add_argument("--out", required=True, help="output folder, e.g. data/interim/luna16/0")
    p.add_argument("--shard", type=int, help="resample shard k of data.shards (default: every case)")
    p.add_argument(
        "--workers", type=int, default=0, help="parallel cases (default: the CPUs allotted)"
    )

    p = _add_stage(sub, "cubes", cmd_cubes,
                   "splits, fractions and cubes of a task (params: cubes.<task>)")
    p.add_argument("--task", required=True, choices=_CUBES_TASKS)
    p.add_argument("--raw", required=True, help="download stage output of the task's dataset")
    p.add_argument("--interim", required=True, help="resample stage output of the task's dataset")
    p.add_argument("--out", required=True, help="output folder, e.g. data/processed/ncc")


def _add_training_stages(sub: argparse._SubParsersAction) -> None:
    """pretrain, init-weights and finetune: the stages that write network weights."""
    p = _add_stage(sub, "pretrain", cmd_pretrain, "pretrain one method (params: pretrain)")
    p.add_argument("--method", required=True, choices=["pcrl", "genesis", "moco"])
    p.add_argument("--pairs", required=True, help="cubes@pretrain output (data/processed/pretrain)")
    p.add_argument("--out", required=True, help="output folder, e.g. data/pretrain/pcrl")
    p.add_argument("--state", required=True, help="resumable state folder (checkpoints), kept across reruns")
    p.add_argument("--device", default="auto", type=device_option,
                   help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=-1, help="DataLoader workers (default: from the CPUs allotted)")
    p.add_argument("--probe",
                   help="cubes@ncc output (data/processed/ncc): log the frozen-encoder probe (params: probe)")
    p.add_argument("--setting", choices=list(SETTINGS), default="3d",
                   help="3d: LUNA16 (params: pretrain); 2d: ChestX-ray14 (params: pretrain with pretrain2d over it)")

    p = _add_stage(sub, "init-weights", cmd_init_weights,
                   "write the scratch initialisation or import an external checkpoint")
    p.add_argument("--init", required=True, help="scratch, or the checkpoint's name in finetune.external")
    p.add_argument("--checkpoint", help="external checkpoint (2d: a ResNet-18) or pcrl export folder")
    p.add_argument("--out", required=True, help="output folder, e.g. data/pretrain/scratch")
    p.add_argument("--setting", choices=list(SETTINGS), default="3d",
                   help="3d: a 3D U-Net checkpoint (finetune.external); 2d: a ResNet-18 (finetune.chest14.external)")

    p = _add_stage(sub, "export", cmd_export, "export a pretrained encoder (safetensors, config, card)")
    p.add_argument("--method", required=True, help="the pretrained method (data/pretrain[2d]/<method>)")
    p.add_argument("--weights", required=True, help="pretrain stage output, e.g. data/pretrain/pcrl")
    p.add_argument("--pairs", help="the pretraining pairs (data/processed/pretrain): scan counts for the card")
    p.add_argument("--out", required=True, help="output folder, e.g. data/export/3d/pcrl")
    p.add_argument("--setting", choices=list(SETTINGS), default="3d")

    p = _add_stage(sub, "finetune", cmd_finetune, "fine-tune a task (params: finetune)")
    p.add_argument("--task", required=True, choices=_DOWNSTREAM_TASKS)
    p.add_argument("--init", required=True, help="initialisation name (scratch, pcrl, genesis, moco, external)")
    p.add_argument("--fraction", required=True, type=float, help="label fraction (a key of fractions.json)")
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--processed", required=True, help="cubes stage output, e.g. data/processed/lcs")
    p.add_argument("--interim", help="resample stage output (segmentation), e.g. data/interim/msd_liver")
    p.add_argument("--weights", required=True, help="initialisation folder holding weights.pt")
    p.add_argument("--out", required=True, help="output folder, e.g. data/finetune/lcs/pcrl/f0.5/s0")
    p.add_argument("--state", required=True, help="resumable state folder (checkpoints), kept across reruns")
    p.add_argument("--device", default="auto", type=device_option,
                   help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader workers, at least 1 (default: from the CPUs allotted)")


def _add_downstream_stages(sub: argparse._SubParsersAction) -> None:
    """evaluate and report: the stages that score the fine-tuned models."""
    p = _add_stage(sub, "evaluate", cmd_evaluate,
                   "score a fine-tuned model on the test split (params: evaluate)")
    p.add_argument("--task", required=True, choices=_DOWNSTREAM_TASKS)
    p.add_argument("--model", required=True, help="finetune stage output holding model.pt")
    p.add_argument("--processed", required=True, help="cubes stage output, e.g. data/processed/lcs")
    p.add_argument("--interim", help="resample stage output (segmentation), e.g. data/interim/msd_liver")
    p.add_argument("--out", required=True, help="output folder, e.g. data/evaluate/lcs/pcrl/f0.5/s0")
    p.add_argument("--record", help="output folder of the run's record and provenance, e.g. "
                                     "data/records/evaluate/lcs/pcrl/f0.5/s0")
    p.add_argument("--device", default="auto", type=device_option,
                   help="auto (CUDA when available), cpu, cuda or cuda:N")

    p = _add_stage(sub, "probe", cmd_probe,
                   "frozen-encoder probe of every initialisation (params: finetune, probe)")
    p.add_argument("--pretrained", required=True, help="initialisations' parent folder (data/pretrain)")
    p.add_argument("--processed", required=True, help="cubes@ncc output (data/processed/ncc)")
    p.add_argument("--out", required=True, help="output folder, e.g. data/probe")

    p = _add_stage(sub, "report", cmd_report,
                   "report every evaluated run (params: finetune, report)")
    p.add_argument("--evaluations", required=True, help="evaluate stages' parent folder (data/evaluate)")
    p.add_argument("--probe", help="probe stage output (data/probe): add the probe's table")
    p.add_argument("--finetuned", help="fine-tune stages' parent folder (data/finetune): learning curves")
    p.add_argument("--pretrained", help="pretrain stages' parent folder (data/pretrain): probe curves")
    p.add_argument("--out", required=True, help="output folder, e.g. results/report")


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
    _add_data_stages(sub)
    _add_training_stages(sub)
    _add_downstream_stages(sub)
    return parser


def relaunched(argv: list[str]) -> int | None:
    """Run a training stage as one torchrun worker per GPU when given several (exit code),
    or None to run it in this process."""
    from pcrl.launch import maybe_relaunch

    return maybe_relaunch(argv)


#: Stages that train, and run one process per GPU when given several (pcrl.launch).
TRAINING_STAGES = {"pretrain", "finetune"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.environ.get("SLURM_JOB_ID"):
        log.info("SLURM job %s on %s", os.environ["SLURM_JOB_ID"], os.environ.get("SLURMD_NODENAME", "?"))
    try:
        params = load_params(args.params)
        check_stage_paths(args, params)
        log.debug("%d CPU threads", configure_threads(args))
        if args.command in TRAINING_STAGES:
            code = relaunched(argv)
            if code is not None:  # the torchrun workers did the work
                return code
        with write_errors():  # a full disk or file size limit anywhere: one line naming the file
            args.func(args, params)
    except PcrlError as exc:
        print(f"pcrl {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except PreemptedError as exc:  # checkpointed: a rerun resumes
        print(f"pcrl {args.command}: preempted ({exc}); rerun to resume", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"pcrl {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
