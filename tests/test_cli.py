"""The CLI on bad input: a clear message naming the file or key, exit 2, no complete-looking output.

Each test drives the real subcommands (``pcrl.cli.main``) on a tiny phantom written in the
native formats, then breaks one thing.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from pcrl.cli import main
from pcrl.phantom import generate_luna16, generate_msd_liver

LUNA_SIZES = {"scans": 3, "subsets": 3, "shape": [80, 80, 24]}


def _params(tmp_path: Path, demo: dict, **data_overrides) -> Path:
    demo["data"].update(data_overrides)
    demo["data"]["phantom"]["luna16"] = dict(LUNA_SIZES)
    demo["data"]["phantom"]["msd_liver"] = {"cases": 4, "test_cases": 1, "shape": [40, 40, 24]}
    demo["data"]["cache_dir"] = str(tmp_path / "cache")
    demo["cubes"]["ncc"]["groups"] = {"train": ["subset0"], "val": ["subset1"], "test": ["subset2"]}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(demo))
    return path


def _run(params: Path, *argv: str) -> int:
    return main(["--params", str(params), *argv, "--no-progress"])


@pytest.fixture()
def local_luna(tmp_path: Path, demo_params: dict) -> tuple[Path, Path]:
    """A LUNA16-like copy the user 'already has', and params pointing at it."""
    root = tmp_path / "LUNA16"
    generate_luna16(root, seed=3, **{k: tuple(v) if isinstance(v, list) else v for k, v in LUNA_SIZES.items()})
    params = _params(tmp_path, demo_params, source="local", datasets=["luna16"], local_paths={"luna16": str(root)})
    return root, params


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


def test_truncated_raw_is_named(local_luna, tmp_path: Path, capsys) -> None:
    root, params = local_luna
    raw = _first(root, "subset*/*.raw")
    data = raw.read_bytes()
    raw.write_bytes(data[: len(data) - 1000])
    out = tmp_path / "raw_out"
    assert _run(params, "download", "--dataset", "luna16", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert raw.name in err and "pcrl download: error" in err
    assert not out.exists()


def test_mhd_naming_missing_data_file(local_luna, tmp_path: Path, capsys) -> None:
    root, params = local_luna
    raw = _first(root, "subset*/*.raw")
    raw.unlink()
    out = tmp_path / "raw_out"
    assert _run(params, "download", "--dataset", "luna16", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert raw.name in err and raw.with_suffix(".mhd").name in err
    assert not out.exists()


def test_local_copy_is_verified_not_copied(local_luna, tmp_path: Path) -> None:
    root, params = local_luna
    out = tmp_path / "raw_out"
    assert _run(params, "download", "--dataset", "luna16", "--out", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == [".pcrl-output", "manifest.json"]
    interim = tmp_path / "interim"
    assert _run(params, "resample", "--dataset", "luna16", "--raw", str(out), "--out", str(interim),
                "--workers", "1") == 0
    assert len(list(interim.glob("*.nii.gz"))) == LUNA_SIZES["scans"]


def test_candidate_outside_its_scan(local_luna, tmp_path: Path, capsys) -> None:
    root, params = local_luna
    out, interim, cubes = tmp_path / "raw_out", tmp_path / "interim", tmp_path / "ncc"
    assert _run(params, "download", "--dataset", "luna16", "--out", str(out)) == 0
    assert _run(params, "resample", "--dataset", "luna16", "--raw", str(out), "--out", str(interim),
                "--workers", "1") == 0
    uid = _first(root, "subset0/*.mhd").stem
    with open(root / "candidates.csv", "a") as fh:
        fh.write(f"{uid},5000.0,5000.0,5000.0,1\n")
    assert _run(params, "cubes", "--task", "ncc", "--raw", str(out), "--interim", str(interim),
                "--out", str(cubes)) == 2
    err = capsys.readouterr().err
    assert uid in err and "5000" in err
    assert not cubes.exists()


def _liver_copy(tmp_path: Path, demo_params: dict) -> tuple[Path, Path]:
    root = tmp_path / "Task03_Liver"
    generate_msd_liver(root, cases=3, test_cases=0, seed=1, shape=(48, 48, 20))
    params = _params(tmp_path, demo_params, source="local", datasets=["msd_liver"],
                     local_paths={"msd_liver": str(root)})
    return root, params


def _replace_image(path: Path, array_zyx: np.ndarray) -> None:
    img = sitk.GetImageFromArray(array_zyx)
    sitk.WriteImage(img, str(path))


@pytest.mark.parametrize("defect", ["nan", "inf", "2d"])
def test_bad_voxels_and_dimensions(tmp_path: Path, demo_params: dict, capsys, defect: str) -> None:
    root, params = _liver_copy(tmp_path, demo_params)
    image = _first(root, "imagesTr/*.nii.gz")
    label = root / "labelsTr" / image.name
    if defect == "2d":
        _replace_image(image, np.zeros((16, 16), np.float32))
        _replace_image(label, np.zeros((16, 16), np.uint8))
    else:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(image))).astype(np.float32)
        arr[2, 3, 4] = np.nan if defect == "nan" else np.inf
        ref = sitk.ReadImage(str(image))
        img = sitk.GetImageFromArray(arr)
        img.CopyInformation(ref)
        sitk.WriteImage(img, str(image))
    raw, interim = tmp_path / "raw_out", tmp_path / "interim"
    assert _run(params, "download", "--dataset", "msd_liver", "--out", str(raw)) == 0
    assert _run(params, "resample", "--dataset", "msd_liver", "--raw", str(raw), "--out", str(interim),
                "--workers", "1") == 2
    err = capsys.readouterr().err
    assert image.name in err
    assert ("non-finite" in err) if defect != "2d" else ("2D" in err or "dimension" in err)
    assert not interim.exists()


class _Archive(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


def test_checksum_mismatch_from_a_mirror(tmp_path: Path, demo_params: dict, capsys) -> None:
    """A mirror serving a Task03_Liver.tar whose md5 is not the Decathlon's: refused."""
    served = tmp_path / "served"
    served.mkdir()
    root, _ = _liver_copy(tmp_path, demo_params)
    with tarfile.open(served / "Task03_Liver.tar", "w") as tar:
        tar.add(root, arcname="Task03_Liver")
    handler = lambda *a, **kw: _Archive(*a, directory=str(served), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        params = _params(
            tmp_path, demo_params, source="download", datasets=["msd_liver"],
            mirror=f"http://127.0.0.1:{server.server_address[1]}", local_paths={},
        )
        out = tmp_path / "raw_out"
        assert _run(params, "download", "--dataset", "msd_liver", "--out", str(out)) == 2
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert "a90ec6c4aa7f6a3d087205e23d4e6397" in err and "Task03_Liver.tar" in err
    assert not out.exists()
    assert not any((tmp_path / "cache").glob("Task03_Liver.tar*"))


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda p: p["cubes"]["pretrain"].update(pairs_per_scan=4), "cubes.pretrain.pairs_per_scan"),
        (lambda p: p["resample"]["luna16"].update(spacing=[1.0, -1.0, 1.0]), "resample.luna16.spacing"),
    ],
)
def test_bad_params_exit_2_naming_the_key(tmp_path: Path, demo_params: dict, capsys, edit, key) -> None:
    edit(demo_params)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(demo_params))
    out = tmp_path / "raw_out"
    assert _run(params, "download", "--dataset", "luna16", "--out", str(out)) == 2
    assert key in capsys.readouterr().err
    assert not out.exists()


def test_console_script_help_and_exit_code(tmp_path: Path) -> None:
    """The installed `pcrl` entry point: --help per stage, exit 2 on a bad params file."""
    exe = shutil.which("pcrl")
    assert exe, "the pcrl console script is not installed (pip install -e .)"
    for stage in ("download", "resample", "cubes"):
        proc = subprocess.run([exe, stage, "--help"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "--out" in proc.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {source: phantom}\n")
    proc = subprocess.run(
        [exe, "--params", str(bad), "download", "--dataset", "luna16", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "bad.yaml" in proc.stderr and "datasets" in proc.stderr


def test_threads_come_from_the_stage_resources_under_every_runner(tmp_path: Path) -> None:
    """`dvc repro` sets no thread count: the CLI takes the stage's threads from
    workflow/resources.yaml (capped by the CPUs it may use), as Snakemake does; a count
    already set (Snakemake, SLURM) is kept. Checked in a fresh process, before torch starts."""
    import os
    import sys

    (tmp_path / "workflow").mkdir()
    (tmp_path / "workflow" / "resources.yaml").write_text(
        "default: {threads: 1}\nresample: {threads: 1}\nfinetune_lcs: {threads: 2}\n")
    probe = ("import argparse, os, sys; from pcrl.resources import configure_threads; "
             "args = argparse.Namespace(command=sys.argv[1], task='lcs', init='scratch', "
             "params=sys.argv[2]); "
             "n = configure_threads(args); import torch; "
             "print(n, os.environ['OMP_NUM_THREADS'], torch.get_num_threads())")
    params = str(tmp_path / "params.yaml")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cpus = len(os.sched_getaffinity(0))

    def probe_run(command: str, **extra: str) -> list[int]:
        out = subprocess.run([sys.executable, "-c", probe, command, params], env={**env, **extra},
                             capture_output=True, text=True, check=True).stdout
        return [int(v) for v in out.split()]

    assert probe_run("resample") == [1, 1, 1]
    assert probe_run("finetune") == [min(2, cpus)] * 3
    assert probe_run("finetune", OMP_NUM_THREADS="1") == [1, 1, 1]  # Snakemake's or SLURM's


def test_init_weights_2d_imports_a_resnet18_and_refuses_a_3d_file_naming_it(tmp_path: Path, demo_params: dict,
                                                                            capsys) -> None:
    import json

    import torch

    from pcrl.networks.resnet18 import ResNet18Encoder
    from pcrl.networks.unet3d import UNet3D

    good, bad = tmp_path / "resnet18.pth", tmp_path / "genesis.pt"
    torch.save(ResNet18Encoder(in_channels=3, width=8).state_dict(), good)
    torch.save(UNet3D(base=2).state_dict(), bad)
    demo_params["finetune"]["chest14"]["external"] = {"imagenet": str(good)}
    params = _params(tmp_path, demo_params)
    out = tmp_path / "pretrain2d" / "imagenet"
    assert _run(params, "init-weights", "--setting", "2d", "--init", "imagenet", "--checkpoint", str(good),
                "--out", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parts"] == ["encoder"] and summary["config"]["layout"] == "resnet18"
    assert _run(params, "init-weights", "--setting", "2d", "--init", "imagenet", "--checkpoint", str(bad),
                "--out", str(tmp_path / "bad")) == 2
    assert "genesis.pt: no ResNet-18 stem" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_check_params_refuses_to_download_chestxray14_without_a_mirror(tmp_path: Path, demo_params: dict,
                                                                       capsys) -> None:
    """Its NIH links are not stable URLs: stop the DAG first, saying what to do."""
    params = _params(tmp_path, demo_params, source="download", mirror=None)
    out = tmp_path / "checked"
    assert _run(params, "check-params", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "chestxray14 cannot be downloaded automatically" in err and "data.sources.chestxray14: local" in err
    assert not out.exists()
    params = _params(tmp_path, demo_params, source="download", mirror="http://127.0.0.1:9/pcrl")
    assert _run(params, "check-params", "--out", str(out)) == 0


@pytest.mark.parametrize("stage", ["pretrain", "finetune", "evaluate"])
def test_a_device_torch_cannot_parse_is_one_line_and_exit_2(stage: str, tmp_path: Path, capsys) -> None:
    """`--device gpu0` (torch would raise a bare RuntimeError inside the stage)."""
    argv = {"pretrain": ["--method", "pcrl", "--pairs", "p", "--out", "o", "--state", "s"],
            "finetune": ["--task", "ncc", "--init", "scratch", "--fraction", "1.0", "--seed", "0",
                         "--processed", "p", "--weights", "w", "--out", "o", "--state", "s"],
            "evaluate": ["--task", "ncc", "--model", "m", "--processed", "p", "--out", "o", "--record", "r"]}[stage]
    with pytest.raises(SystemExit) as exited:
        main([stage, *argv, "--device", "gpu0"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "'gpu0' is not a device: use auto, cpu, cuda or cuda:N" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()
    for good in ("auto", "cpu", "cuda", "cuda:1"):
        from pcrl.resources import device_option

        assert device_option(good) == good
