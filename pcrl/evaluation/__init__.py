"""Evaluation, in one place: metrics of the paper's tasks and scoring of a network on cases.

- :mod:`pcrl.evaluation.metrics`: ROC AUC (NCC), Dice / IoU per region (LCS, BMS), ROC AUC
  per finding and their mean (Chest14) with MONAI's metrics, sliding-window prediction of
  whole volumes;
- :mod:`pcrl.evaluation.scoring`: a network's scores over a task's candidates, volumes or
  radiographs,
  used both to validate during fine-tuning and to score the test split
  (:mod:`pcrl.stages.evaluate`, the ``evaluate`` stage).
"""
