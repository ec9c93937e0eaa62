"""Full disks, file size limits and unwritable folders (issue 30, class 5).

Every stage family runs under a file size limit (``RLIMIT_FSIZE`` in a subprocess: the
write fails with EFBIG, numpy reports a short write, torch its writer's error) and must
end with exit 2 and one line naming the output, leaving no complete-looking output: no
final-named file or folder, no marker, no temporary sibling. Unwritable folders are
simulated in-process (the tests run as root, whom chmod does not stop).
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_task_data import liver_case, write_split, write_volumes

from pcrl.atomic import atomic_dir, atomic_path, save_npy, write_json
from pcrl.records import write_contents
from pcrl.cli import main
from pcrl.errors import OutputWriteError
from pcrl.phantom import generate_chestxray14, generate_msd_liver
from pcrl.run_state import prepare_state, state_lock
from pcrl.torchfile import save_checked

REPO = Path(__file__).resolve().parents[1]
LIMIT = 4096  # bytes: every stage's outputs are larger, its markers and stamps smaller

pytestmark = pytest.mark.usefixtures("one_thread")


def _limited(params: Path, *argv: str, limit: int = LIMIT) -> subprocess.CompletedProcess[str]:
    """``pcrl <argv>`` in a subprocess whose files may not grow beyond ``limit`` bytes, run
    beside ``params`` (outside any DVC repository)."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pcrl.cli", "--params", str(params), *argv, "--no-progress"],
                          preexec_fn=cap, env=env, capture_output=True, text=True, timeout=300,
                          cwd=params.parent)


def _assert_one_line(proc: subprocess.CompletedProcess[str], command: str, named: Path) -> str:
    """Exit 2, no traceback, and a last line naming ``named`` (or a file below it)."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"pcrl {command}: error: {named}"), line
    assert "cannot write" in line and ("limit" in line or "cut short" in line), line
    return line


def _nothing_complete(out: Path) -> None:
    """Neither ``out`` nor a temporary sibling of it is left."""
    assert not out.exists()
    if out.parent.is_dir():
        assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


# --------------------------------------------------------------------------- the library's writers


def test_an_atomic_file_on_a_full_disk_is_named_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out" / "table.json"

    def full(self: Path, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OutputWriteError, match=rf"^{target}: cannot write: disk full \(No space left on device\)$"):
        write_json(target, {"a": 1})
    monkeypatch.undo()
    assert sorted(os.listdir(target.parent)) == []


def test_a_file_inside_a_stage_folder_is_named_by_its_final_path(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "stage"

    def quota(self: Path, data: bytes) -> int:
        raise OSError(errno.EDQUOT, "Disk quota exceeded", str(self))

    monkeypatch.setattr(Path, "write_bytes", quota)
    with pytest.raises(OutputWriteError, match=rf"^{out / 'sub' / 'x.bin'}: cannot write: disk quota exceeded"):
        with atomic_dir(out) as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "x.bin").write_bytes(b"123")
    _nothing_complete(out)


def test_errors_reading_inputs_are_not_called_write_errors(tmp_path: Path) -> None:
    """A missing or denied input keeps its own error: only writes become OutputWriteError."""
    elsewhere = tmp_path / "inputs" / "scan.nii.gz"
    with pytest.raises(FileNotFoundError):
        with atomic_dir(tmp_path / "out"):
            elsewhere.read_bytes()
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "out.npy"):
            raise PermissionError(errno.EACCES, "Permission denied", str(elsewhere))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with atomic_path(tmp_path / "out.pt"):
            raise RuntimeError("shape mismatch")
    broken = tmp_path / "inputs.pt"
    broken.write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(RuntimeError, match="PytorchStreamReader"):  # torch's reader, not its writer
        with atomic_dir(tmp_path / "out"):
            torch.load(broken, weights_only=True)
    broken.unlink()
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("writer", ["npy", "torch"])
def test_numpy_and_torch_short_writes_name_the_file(writer: str, tmp_path: Path) -> None:
    """Under RLIMIT_FSIZE an array's write fails with EFBIG and torch's zip writer with no
    errno; both become one line naming the final file."""
    target = tmp_path / ("cubes.npy" if writer == "npy" else "state.pt")
    code = ("import sys, numpy as np, torch\n"
            "from pcrl.atomic import save_npy\nfrom pcrl.torchfile import save_checked\n"
            "from pcrl.errors import OutputWriteError\n"
            "try:\n"
            f"    save_npy(sys.argv[1], np.zeros(50000)) if {writer == 'npy'} else "
            "save_checked({'w': torch.zeros(50000)}, sys.argv[1])\n"
            "except OutputWriteError as exc:\n    print(exc)\n")

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

    proc = subprocess.run([sys.executable, "-c", code, str(target)], preexec_fn=cap, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
                          timeout=120)
    # save_npy writes through its hashing writer, whose write reports the errno; torch's
    # zip writer reports none
    reason = ("file size limit reached (File too large)" if writer == "npy"
              else "write cut short (disk full or file size limit)")
    assert proc.stdout.strip() == f"{target}: cannot write: {reason}", proc.stdout + proc.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == []
    save_npy(tmp_path / "fine.npy", np.zeros(3))  # without the limit the same writers work
    save_checked({"w": torch.zeros(3)}, tmp_path / "fine.pt")


def test_an_unwritable_output_parent_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the kernel answers a user without write permission on the parent folder."""
    parent = tmp_path / "processed"
    parent.mkdir()

    def denied(*args: object, prefix: str, dir: str, **kwargs: object) -> str:  # noqa: A002 (tempfile's keyword)
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, f"{prefix}k3j9.tmp"))

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    monkeypatch.setattr(tempfile, "mkstemp", denied)
    message = rf"^{parent / 'ncc'}: cannot write: not writable \(Permission denied\)$"
    with pytest.raises(OutputWriteError, match=message):
        with atomic_dir(parent / "ncc"):
            pass
    with pytest.raises(OutputWriteError, match=rf"^{parent / 'x.npy'}: cannot write: not writable"):
        save_npy(parent / "x.npy", np.zeros(2))
    assert list(parent.iterdir()) == []


def test_a_read_only_file_system_under_a_state_folder_is_named(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state" / "lcs"
    real_mkdir = Path.mkdir

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        if self == state or state in self.parents or self == state.parent:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(OutputWriteError, match=r"cannot write: read-only file system") as info:
        prepare_state(state, "fingerprint")
    assert str(info.value).startswith(str(tmp_path / "state"))
    with pytest.raises(OutputWriteError, match=rf"^{tmp_path / 'state'}: cannot write: read-only file system"):
        with state_lock(state):
            pass
    assert not state.exists()


# --------------------------------------------------------------------------- stages under a file size limit


@pytest.fixture(scope="module")
def liver(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> dict[str, Path]:
    """An MSD liver copy 'the user has', its download record and resampled volumes."""
    root = tmp_path_factory.mktemp("limits")
    generate_msd_liver(root / "Task03_Liver", cases=3, test_cases=0, seed=1, shape=(48, 48, 20))
    demo = yaml.safe_load((repo_root / "params.yaml").read_text())
    demo["data"].update(source="local", datasets=["msd_liver"], local_paths={"msd_liver": str(root / "Task03_Liver")},
                        cache_dir=str(root / "cache"))
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(demo))
    raw, interim = root / "raw", root / "interim"
    assert main(["--params", str(params), "download", "--dataset", "msd_liver", "--out", str(raw),
                 "--no-progress"]) == 0
    assert main(["--params", str(params), "resample", "--dataset", "msd_liver", "--raw", str(raw), "--out",
                 str(interim), "--workers", "1", "--no-progress"]) == 0
    return {"root": root, "params": params, "raw": raw, "interim": interim}


def test_resample_3d_under_a_file_size_limit(liver: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "interim"
    before = sorted(p.name for p in liver["raw"].iterdir())
    proc = _limited(liver["params"], "resample", "--dataset", "msd_liver", "--raw", str(liver["raw"]),
                    "--out", str(out), "--workers", "1")
    _assert_one_line(proc, "resample", out)
    _nothing_complete(out)
    assert sorted(p.name for p in liver["raw"].iterdir()) == before


def test_cubes_under_a_file_size_limit(liver: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "lcs"
    proc = _limited(liver["params"], "cubes", "--task", "lcs", "--raw", str(liver["raw"]),
                    "--interim", str(liver["interim"]), "--out", str(out), limit=16)  # its JSON files
    _assert_one_line(proc, "cubes", out)
    _nothing_complete(out)


def test_an_unwritable_output_folder_through_the_cli(liver: dict[str, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The kernel's answer to a user who may not write the output's parent folder (root
    may write anywhere, so the answer is given by hand): exit 2, one line naming it."""
    out = tmp_path / "processed" / "lcs"
    out.parent.mkdir()
    real = tempfile.mkdtemp

    def denied(suffix: str | None = None, prefix: str | None = None, dir: str | None = None) -> str:  # noqa: A002
        if dir is not None and Path(dir) == out.parent:
            raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, f"{prefix}x1y2{suffix}"))
        return real(suffix, prefix, dir)

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    capsys.readouterr()
    assert main(["--params", str(liver["params"]), "cubes", "--task", "lcs", "--raw", str(liver["raw"]),
                 "--interim", str(liver["interim"]), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"pcrl cubes: error: {out}: cannot write: not writable (Permission denied)"
    assert list(out.parent.iterdir()) == []


def test_the_2d_store_under_a_file_size_limit(tmp_path: Path, repo_root: Path) -> None:
    root = tmp_path / "chestxray14"
    generate_chestxray14(root, patients=5, size=(64, 64), seed=3)
    demo = yaml.safe_load((repo_root / "params.yaml").read_text())
    demo["data"].update(source="local", datasets=["chestxray14"], local_paths={"chestxray14": str(root)},
                        cache_dir=str(tmp_path / "cache"))
    demo["resample"]["chestxray14"].update(expected_size=[64, 64], size=[64, 64])
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(demo))
    raw, out = tmp_path / "raw", tmp_path / "interim"
    assert main(["--params", str(params), "download", "--dataset", "chestxray14", "--out", str(raw),
                 "--no-progress"]) == 0
    proc = _limited(params, "resample", "--dataset", "chestxray14", "--raw", str(raw), "--out", str(out))
    _assert_one_line(proc, "resample", out)
    _nothing_complete(out)


def test_pretraining_checkpoints_under_a_file_size_limit(tmp_path: Path, repo_root: Path) -> None:
    from pcrl.phantom import luna16_case
    from pcrl.preprocessing.pair_config import PairConfig
    from pcrl.preprocessing.pair_sampling import sample_pairs

    pairs = tmp_path / "pairs"
    config = PairConfig(crop_sizes=((16, 16, 8), (24, 24, 12), (32, 32, 16)), cube_size=(16, 16, 8))
    index, ids = [], []
    for i in range(3):
        case = luna16_case(seed=0, index=i, shape=(80, 80, 24))
        volume = (np.clip(case.image.astype(np.float32), -1000, 1000) + 1000) / 2000
        cubes, _ = sample_pairs(volume, 8, config, np.random.default_rng(i), case_id=case.case_id)
        save_npy(pairs / "pairs" / f"{case.case_id}.npy", cubes.astype(np.float16))
        index.append({"id": case.case_id, "group": f"subset{i}", "file": f"pairs/{case.case_id}.npy", "n": 8})
        ids.append(case.case_id)
    write_json(pairs / "pairs.json", index)
    write_json(pairs / "split.json", {"train": ids[:2], "val": ids[2:]})
    write_contents(pairs, {"stage": "cubes", "task": "pretrain", "dataset": "luna16"})  # as the cubes stage records it
    demo = yaml.safe_load((repo_root / "params.yaml").read_text())
    demo["pretrain"].update(epochs=1, batch_size=4, checkpoint_every=1, network={"base": 2, "norm": "batch"})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(demo))
    out, state = tmp_path / "out", tmp_path / "state"
    proc = _limited(params, "pretrain", "--method", "genesis", "--pairs", str(pairs), "--out", str(out),
                    "--state", str(state), "--device", "cpu", "--workers", "0")
    _assert_one_line(proc, "pretrain", state)
    _nothing_complete(out)
    assert not list(state.glob("*.pt"))


@pytest.mark.parametrize("limit", [65536, LIMIT])
def test_finetuning_state_under_a_file_size_limit(limit: int, tmp_path: Path, repo_root: Path) -> None:
    """At 64 KiB the state's checkpoint (300 kB) is cut short; at 4 KiB already the shared
    memory file that hands the data loader worker's batches over (a full /dev/shm alike)."""
    processed = tmp_path / "processed" / "lcs"
    processed.mkdir(parents=True)
    ids = ["c0", "c1", "c2", "c3"]
    write_split(processed, ids[:2], ids[2:3], ids[3:], task="lcs")
    write_volumes(tmp_path / "interim", {c: liver_case(i, shape=(16, 16, 8)) for i, c in enumerate(ids)})
    demo = yaml.safe_load((repo_root / "params.yaml").read_text())
    ft = demo["finetune"]
    ft.update(network={"base": 2, "norm": "batch"})
    ft["lcs"].update(epochs=2, patience=2, batch_size=2, patches_per_volume=2, patch_size=[8, 8, 8])
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(demo))
    out, state = tmp_path / "model", tmp_path / "state"
    assert main(["--params", str(params), "init-weights", "--init", "scratch", "--out",
                 str(tmp_path / "scratch")]) == 0
    proc = _limited(params, "finetune", "--task", "lcs", "--init", "scratch", "--fraction", "1.0", "--seed", "0",
                    "--processed", str(processed), "--interim", str(tmp_path / "interim"),
                    "--weights", str(tmp_path / "scratch"), "--out", str(out), "--state", str(state),
                    "--workers", "1", limit=limit)
    _assert_one_line(proc, "finetune", state if limit > LIMIT else Path("/dev/shm"))
    _nothing_complete(out)


def test_export_under_a_file_size_limit(tmp_path: Path) -> None:
    """The exported encoder (safetensors, ~100 kB) cut short: named, and no export folder."""
    from conftest import RESAMPLE_3D, export_pretrained

    export_pretrained(tmp_path, 3)  # the pretrain folder and pairs split it exports from, unlimited
    out = tmp_path / "export_again"
    code = ("import json, sys\nfrom pathlib import Path\nfrom pcrl.errors import OutputWriteError\n"
            "from pcrl.stages.export import run_export\nroot = Path(sys.argv[1])\ntry:\n"
            "    run_export('genesis', setting='3d', weights=root / 'pretrain3', out=root / 'export_again',\n"
            f"               resample={RESAMPLE_3D!r}, cube_size=[32, 32, 16], source='phantom',\n"
            "               pairs=root / 'pairs3', lock=root / 'dvc.lock')\n"
            "except OutputWriteError as exc:\n    print(exc)\n")

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], preexec_fn=cap, capture_output=True,
                          text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})
    # safetensors' writer names no file, only the errno: the output folder is named
    assert proc.stdout.strip() == f"{out}: cannot write: file size limit reached", proc.stdout + proc.stderr[-2000:]
    _nothing_complete(out)
