"""``pcrl evaluate``: score one fine-tuned model on its task's untouched test split.

NCC: ROC AUC over every test candidate; LCS/BMS: sliding-window inference over each whole
resampled test volume, Dice and IoU per region averaged over volumes (Models Genesis'
protocol); Chest14: ROC AUC of each of the 14 findings over every image of the test
patients, and their mean (Wang et al., CVPR 2017; PCRL's 2D setting). The output folder
holds one ``metrics.json`` (docs/INTERFACES.md)::

    {"task", "init", "fraction", "seed", "metrics": {...}, "primary", "provenance": {...}}

where ``provenance`` records the git commit, the sha256 of the ``evaluate`` params, the
library versions, the device, and the same record of the fine-tuning run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


from pcrl.atomic import atomic_dir, write_json
from pcrl.torchfile import load_checked, require_finite
from pcrl.distributed import init_distributed
from pcrl.errors import DataError
from pcrl.preprocessing.task_data import load_split
from pcrl.finetune.models import NetworkConfig, build_network
from pcrl.tasks import get_task
from pcrl.provenance import provenance
from pcrl.stages.kinds import kind_module

log = logging.getLogger(__name__)

MODEL_NAME = "model.pt"
_MODEL_KEYS = ("state_dict", "task", "init", "fraction", "seed", "network", "roi_size",
               "train_ids", "val_ids")


def read_model(folder: Path) -> dict[str, Any]:
    """The fine-tune stage's ``model.pt``; DataError naming the file when absent or malformed."""
    path = Path(folder) / MODEL_NAME
    if not path.is_file():
        raise DataError(f"{path}: fine-tuned model not found (run the finetune stage first)")
    model = load_checked(path, "fine-tuned model")
    missing = [k for k in _MODEL_KEYS if k not in model]
    if missing:
        raise DataError(f"{path}: not a fine-tuned model (missing {missing})")
    require_finite(model["state_dict"], path, "fine-tuned model")
    return model


def test_ids(processed: Path, model: dict[str, Any], source: Path) -> list[str]:
    """The task's test cases, refused if the model saw any of them in training or validation.

    Raises:
        DataError: An empty test split, or test cases among the model's training or
            validation cases (named).
    """
    split = load_split(processed, model["fraction"], str(model["task"]))
    test = list(split.test)
    for name in ("train_ids", "val_ids"):
        shared = sorted(set(test) & set(map(str, model[name])))
        if shared:
            raise DataError(f"{processed}/split.json: test cases {shared[:5]} were used to "
                            f"{'train' if name == 'train_ids' else 'validate'} {source}; "
                            "the test split must be untouched")
    return test


def run_evaluate(
    task: str,
    settings: dict[str, Any],
    *,
    model_dir: Path,
    processed: Path,
    interim: Path | None,
    out: Path,
    record_out: Path | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate ``model_dir/model.pt`` on the test split of ``task``; write ``out/metrics.json``.

    ``metrics.json`` holds numbers only (the task's metrics and ``test_cases``), so that
    ``dvc metrics show`` / ``diff`` list metrics, not strings; which run it is (task, init,
    fraction, seed, primary metric) and its provenance go to ``record_out/record.json``, a
    folder DVC does not read as metrics.

    Args:
        task: ``ncc``, ``lcs``, ``bms`` or ``chest14``; must be the model's task.
        settings: The ``evaluate`` params section.
        model_dir: The fine-tune stage's output folder.
        processed: ``data/processed/<task>``.
        interim: ``data/interim/<dataset>`` (segmentation tasks, Chest14).
        out: Output folder (metrics).
        record_out: Output folder of the run's record and provenance (None: not written).
        device: "auto", "cpu" or "cuda".

    Returns:
        The metrics record written.
    """
    spec = get_task(task)
    model = read_model(model_dir)
    if model["task"] != spec.name:
        raise DataError(f"{model_dir / MODEL_NAME}: a model of task {model['task']}, not {task}")
    ids = test_ids(Path(processed), model, model_dir / MODEL_NAME)
    dev = init_distributed(None if device == "auto" else device).device
    net = build_network(spec, NetworkConfig(**model["network"]))
    net.load_state_dict(model["state_dict"])
    net.to(dev)
    metrics = kind_module(spec).test_metrics(net, spec, model, ids, settings, processed=Path(processed),
                                             interim=Path(interim) if interim else None,
                                             source=model_dir / MODEL_NAME, device=dev)
    record = {
        "task": spec.name, "init": model["init"], "fraction": model["fraction"],
        "seed": model["seed"], "metrics": metrics, "primary": spec.primary,
        "provenance": {**provenance({"evaluate": settings}, device=dev),
                       "finetune": model.get("provenance", {}),
                       "test_cases": len(ids)},
    }
    with atomic_dir(out) as tmp:
        write_json(tmp / "metrics.json", {**metrics, "test_cases": len(ids)})
    if record_out is not None:
        with atomic_dir(record_out) as tmp:
            write_json(tmp / "record.json", record)
    log.info("%s/%s f%s s%s: %s = %.4f on %d test cases", spec.name, model["init"],
             model["fraction"], model["seed"], spec.primary, metrics[spec.primary], len(ids))
    return record
