"""A stage never deletes what it did not write: each case drives the real CLI and then
checks that the user's input is intact, byte for byte."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from pcrl.cli import main
from pcrl.phantom import generate_msd_liver
from pcrl.outputs import MARKER, FINGERPRINT, UnsafeOutputError, check_output
from pcrl.run_state import discard_state, prepare_state


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def liver(tmp_path: Path, demo_params: dict) -> tuple[Path, Path, dict[str, str]]:
    """A user's Decathlon liver copy, params pointing at it, and its fingerprint."""
    root = tmp_path / "datasets" / "Task03_Liver"
    generate_msd_liver(root, cases=2, test_cases=0, seed=1, shape=(48, 48, 20))
    demo_params["data"].update(source="local", datasets=["msd_liver"],
                               local_paths={"msd_liver": str(root)},
                               cache_dir=str(tmp_path / "cache"))
    params = tmp_path / "work" / "params.yaml"
    params.parent.mkdir()
    params.write_text(yaml.safe_dump(demo_params))
    return root, params, _tree(root)


def _run(params: Path, *argv: str) -> int:
    return main(["--params", str(params), *argv, "--no-progress"])


@pytest.mark.parametrize("where", ["itself", "parent", "inside"])
def test_download_refuses_an_out_at_the_users_dataset(liver, capsys, where: str) -> None:
    root, params, before = liver
    out = {"itself": root, "parent": root.parent, "inside": root / "imagesTr"}[where]
    (root.parent / "unrelated.txt").write_text("keep me")
    assert _run(params, "download", "--dataset", "msd_liver", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert str(out) in err and str(root) in err
    assert _tree(root) == before
    assert (root.parent / "unrelated.txt").read_text() == "keep me"


def test_resample_refuses_its_raw_folder_as_out(liver, tmp_path: Path, capsys) -> None:
    root, params, _ = liver
    raw = tmp_path / "work" / "raw"
    assert _run(params, "download", "--dataset", "msd_liver", "--out", str(raw)) == 0
    manifest = _tree(raw)
    assert _run(params, "resample", "--dataset", "msd_liver", "--raw", str(raw),
                "--out", str(raw), "--workers", "1") == 2
    err = capsys.readouterr().err
    assert "--out" in err and f"is the input {raw}" in err
    assert _tree(raw) == manifest


@pytest.mark.parametrize("which", ["cwd", "home"])
def test_out_at_the_repository_or_home_is_refused(liver, tmp_path: Path, monkeypatch, capsys,
                                                  which: str) -> None:
    _, params, _ = liver
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    monkeypatch.setenv("HOME", str(home))
    repo = tmp_path / "work"
    (repo / ".git").mkdir()
    monkeypatch.chdir(repo / ".git")  # inside the repository, which is protected as a whole
    out = {"cwd": ".", "home": str(home)}[which]
    target = {"cwd": repo / ".git", "home": home}[which]
    before = _tree(target)
    assert _run(params, "download", "--dataset", "msd_liver", "--out", out) == 2
    assert "pcrl download: error: --out" in capsys.readouterr().err
    assert _tree(target) == before


def test_existing_folder_without_marker_is_refused(liver, tmp_path: Path, capsys) -> None:
    _, params, _ = liver
    out = tmp_path / "work" / "results_of_my_own"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _run(params, "download", "--dataset", "msd_liver", "--out", str(out)) == 2
    assert f"--out {out} exists and was not written by this pipeline" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "manifest.json").exists()


def test_a_pipeline_output_is_replaced(liver, tmp_path: Path) -> None:
    _, params, _ = liver
    out = tmp_path / "work" / "raw"
    assert _run(params, "download", "--dataset", "msd_liver", "--out", str(out)) == 0
    assert (out / MARKER).is_file()
    (out / "stale.txt").write_text("from an older run")
    assert _run(params, "download", "--dataset", "msd_liver", "--out", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "manifest.json"]


def test_out_filesystem_root_is_refused(liver, capsys) -> None:
    _, params, _ = liver
    assert _run(params, "download", "--dataset", "msd_liver", "--out", "/") == 2
    assert "filesystem root" in capsys.readouterr().err


def test_pretrain_state_that_is_not_a_state_folder_is_kept(tmp_path: Path) -> None:
    state = tmp_path / "my_checkpoints"
    state.mkdir()
    (state / "model.pt").write_bytes(b"weights of another project")
    with pytest.raises(UnsafeOutputError, match="--state"):
        prepare_state(state, "abc")
    assert (state / "model.pt").read_bytes() == b"weights of another project"


def test_state_of_another_run_is_discarded_and_marked(tmp_path: Path) -> None:
    state = tmp_path / "state"
    prepare_state(state, "run-1")
    (state / "last.pt").write_text("epoch 3")
    prepare_state(state, "run-1")
    assert (state / "last.pt").is_file()  # same run: resumes
    prepare_state(state, "run-2")
    assert sorted(p.name for p in state.iterdir()) == [MARKER, FINGERPRINT]
    assert (state / FINGERPRINT).read_text() == "run-2\n"


def test_output_and_state_may_not_nest(tmp_path: Path, liver, capsys) -> None:
    _, params, _ = liver
    out = tmp_path / "work" / "pretrain"
    code = _run(params, "pretrain", "--method", "pcrl", "--pairs", str(tmp_path / "pairs"),
                "--out", str(out), "--state", str(out / "state"))
    assert code == 2
    assert "--out" in capsys.readouterr().err


def test_check_output_relations(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "raw").mkdir(parents=True)
    check_output(tmp_path / "out", inputs=[data / "raw"], protected=[tmp_path])
    for out, relation in [(data / "raw", "is"), (data, "contains"), (data / "raw" / "x", "lies inside")]:
        with pytest.raises(UnsafeOutputError, match=relation):
            check_output(out, inputs=[data / "raw"])
    with pytest.raises(UnsafeOutputError, match="contains"):
        check_output(tmp_path.parent, protected=[tmp_path])
    link = tmp_path / "link"
    os.symlink(data / "raw", link)
    with pytest.raises(UnsafeOutputError, match="is the input"):  # links resolved
        check_output(link, inputs=[data / "raw"])


def test_discard_state_removes_only_a_marked_state_folder(tmp_path: Path) -> None:

    state = tmp_path / "state"
    prepare_state(state, "run-1")
    (state / "checkpoints").mkdir()
    (state / "checkpoints" / "epoch_001.pt").write_bytes(b"kept copy")
    discard_state(state)
    assert not state.exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    discard_state(foreign)
    assert (foreign / "notes.txt").read_text() == "keep"
