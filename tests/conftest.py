"""Shared fixtures: repository paths and the demo params."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture()
def demo_params() -> dict:
    """A fresh copy of the repository's params.yaml (the demo configuration)."""
    return copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))
