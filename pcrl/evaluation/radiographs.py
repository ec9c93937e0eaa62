"""Scoring Chest14 (PCRL's 2D setting): the sigmoid of each finding's logit for every image
of the patients, then ROC AUC per finding and their mean
(:func:`pcrl.evaluation.metrics.multilabel_metrics`; Wang et al., CVPR 2017, and PCRL's 2D
setting score ChestX-ray14 so). The same functions serve validation and the test, as for
the 3D tasks (:mod:`pcrl.evaluation.scoring`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from pcrl.errors import DataError
from pcrl.evaluation.metrics import multilabel_metrics
from pcrl.evaluation.scoring import eval_outputs
from pcrl.preprocessing.chest_labels import LabelledImages, radiograph_batches
from pcrl.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)

__all__ = ["radiograph_scores", "score_radiographs"]


def radiograph_scores(net: nn.Module, images: LabelledImages, *, device: torch.device,
                      batch_size: int = 32) -> np.ndarray:
    """(N, L) probabilities (sigmoid of each finding's logit) of every image, in order.

    The sigmoid is taken in float64, so that large logits do not saturate into ties.
    """
    scores = eval_outputs(net, radiograph_batches(images, batch_size), device,
                           lambda logits: torch.sigmoid(logits.double()).cpu().numpy())
    width = images.labels.shape[1]
    return np.concatenate(scores) if scores else np.zeros((0, width), np.float64)


def score_radiographs(net: nn.Module, images: LabelledImages, task: TaskSpec | str, *,
                      device: torch.device, batch_size: int = 32, split: str = "scored"
                      ) -> dict[str, float]:
    """``{"auc_<finding>", ..., "auc_mean", "labels_scored", "n"}`` of the network on ``images``.

    A finding with a single class among the images (no positive: a small split) has no AUC:
    it is left out, with a warning naming it, and ``auc_mean`` is over the findings scored
    (``labels_scored`` of 14). On the real ChestX-ray14 val and test lists none is left out.

    Raises:
        DataError: No finding has both classes, or bad labels/scores, naming the file and
            the ``split`` scored (``val``, ``test``).
    """
    spec = get_task(task)
    scores = radiograph_scores(net, images, device=device, batch_size=batch_size)
    labels = np.asarray(images.labels)
    missing = [name for j, name in enumerate(spec.class_names) if len(np.unique(labels[:, j])) == 1]
    if missing:
        log.warning("%s, the %d %s images: %d of %d findings have a single class and no AUC: %s", images.source,
                    len(images), split, len(missing), len(spec.class_names), ", ".join(missing))
    try:
        return multilabel_metrics(scores, labels, spec.class_names, skip_single_class=True)
    except DataError as exc:
        raise DataError(f"{images.source}, the {len(images)} images of the "
                        f"{len(set(images.patients))} {split} patients: {exc}") from None
