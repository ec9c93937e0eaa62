"""``README.md`` of an export: a Hugging Face model card (YAML front matter + Markdown body).

The body says what the weights were trained on (phantom or real data, scans, split), how
(method, params, epochs, steps), how well (the frozen-encoder probe curve when the pretrain
stage logged it), where from (git commit, dvc.lock hashes) and the sha256 of every file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

__all__ = ["model_card"]

_DATASETS = {"luna16": "LUNA16 (LIDC-IDRI chest CT)", "chestxray14": "NIH ChestX-ray14"}


def _front_matter(config: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    tags = list(dict.fromkeys(["self-supervised-learning", "pcrl", str(config["method"]),
                               f"{config['spatial_dims']}d", "medical-imaging", str(config["family"])]))
    meta = {"license": "apache-2.0", "library_name": "pytorch", "pipeline_tag": "image-feature-extraction",
            "datasets": [data["dataset"]], "tags": tags}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _probe_lines(summary: Mapping[str, Any]) -> list[str]:
    curve = summary.get("probe_val_auc") or {}
    if not curve:
        return ["No frozen-encoder probe was logged during pretraining."]
    rows = ["| epoch | probe AUC (NCC val) |", "|---|---|"]
    rows += [f"| {epoch} | {float(auc):.4f} |" for epoch, auc in curve.items()]
    return ["Frozen-encoder probe logged during pretraining (pcrl/evaluation/probe.py):", "", *rows]


def model_card(*, config: Mapping[str, Any], plan: Mapping[str, Any], data: Mapping[str, Any],
               summary: Mapping[str, Any], settings: Mapping[str, Any], provenance: Mapping[str, Any],
               checksums: Mapping[str, str]) -> str:
    """The card's text.

    Args:
        config: ``config.json``; plan: ``adaptation_plan.json``.
        data: ``{"dataset", "source", "scans", "split"}`` (source: phantom / download / local).
        summary: the pretrain stage's ``summary.json``.
        settings: the method's pretraining settings (weights.pt ``config``).
        provenance: ``{"git_commit", "dvc_lock"}``.
        checksums: file name -> sha256 of the files beside the card.
    """
    phantom = data.get("source") == "phantom"
    name = _DATASETS.get(str(data["dataset"]), str(data["dataset"]))
    kind = "a generated PHANTOM standing in for " + name if phantom else name
    split = data.get("split") or {}
    lines = [
        _front_matter(config, data),
        f"# PCRL {config['spatial_dims']}D encoder: {config['method']} ({config['family']}, width {config['width']})",
        "",
        "## Data",
        f"Pretrained on {kind}: {data.get('scans', 'unknown')} {data.get('unit', 'scans')} "
        f"({', '.join(f'{k} {len(v)}' for k, v in split.items()) or 'split unknown'}).",
        "",
        "## Method",
        f"Method `{config['method']}` (pretrained parts: {', '.join(config['pretrained_parts']) or 'none'}); "
        f"{summary.get('epochs', '?')} epochs on {summary.get('train_pairs', '?')} pairs; final metrics "
        f"`{json.dumps(summary.get('final') or {}, sort_keys=True)}`.",
        "", "```json", json.dumps(settings, indent=2, sort_keys=True, default=str), "```", "",
        "## Probe", *_probe_lines(summary), "",
        "## Preprocessing the weights expect",
        "", "```json", json.dumps(plan, indent=2), "```", "",
        "## Provenance",
        f"git commit `{provenance.get('git_commit', 'unknown')}`; dvc.lock of the pretrain stage:",
        "", "```json", json.dumps(provenance.get("dvc_lock") or "no dvc.lock", indent=2, sort_keys=True), "```", "",
        "## Files (sha256)", "", "| file | sha256 |", "|---|---|",
        *[f"| {f} | `{h}` |" for f, h in sorted(checksums.items())], "",
        "## Known limits",
        *(["- Trained on a phantom: the weights demonstrate the pipeline, they are not a medical model."]
          if phantom else []),
        "- Not a diagnostic device; downstream results depend on matching the preprocessing above.",
        f"- Inputs must have {config['in_channels']} channel(s) and sizes divisible by "
        f"{config['downsampling_factor']}.",
        "- Load with `pcrl.hub.load_encoder(folder)`, which checks every file's sha256 and every key.",
        "",
    ]
    return "\n".join(lines)
