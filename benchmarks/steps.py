"""A pretraining step built from a params file, as the pretrain stage builds it.

Shared by benchmarks/bench_step.py and benchmarks/gpu_check.py: the method's whole
configuration (network width, loss, target mode, ablations, corruption, augmentation) comes
from ``pretrain`` of a params file through the same functions the stage uses
(:func:`pcrl.stages.pretrain.used_settings`, :func:`~pcrl.stages.pretrain.method_settings`),
so a figure measured here is the figure of that configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pcrl.config import load_params
from pcrl.engine import resolve_amp
from pcrl.engine.config import amp_dtype
from pcrl.methods import build_method, method_config
from pcrl.settings import get_setting
from pcrl.stages.pretrain import method_settings, used_settings

CONV_OPS = ("conv", "cudnn_convolution", "mkldnn_convolution", "slow_conv")
#: The run length given to the momentum schedule of a benchmarked step (any value times the same).
NOMINAL_STEPS = 10_000


@dataclass
class Step:
    """One training step of a method on a fixed random batch."""

    run: Callable[[], None]
    method: torch.nn.Module
    batch: int
    size: tuple[int, ...]
    amp: str


def build_step(params_file: Path, method: str, device: torch.device, *, amp: str | None = None,
               batch: int | None = None, n_data: int | None = None, channels_last: bool = False,
               compile_step: bool = False, overrides: dict[str, Any] | None = None,
               wrap: Callable[[torch.nn.Module], Callable[..., Any]] | None = None, setting: str = "3d") -> Step:
    """The step of ``method`` configured by ``params_file`` (``pretrain`` and the pair cube
    size of ``cubes.pretrain``; with ``setting="2d"`` the ChestX-ray14 setting: ``pretrain``
    with ``pretrain2d.settings`` over it and 2D batches of ``cubes.pretrain2d``'s cube size);
    ``amp``/``batch`` override the file's; ``overrides`` replace keys of the method's mapping
    (e.g. a small ``base`` for a tiny run); ``wrap`` wraps the module for the forward pass
    (e.g. DistributedDataParallel)."""
    params = load_params(params_file)
    chosen = get_setting(setting)
    settings = used_settings(method, chosen.pretrain_params(params))
    cube = [int(s) for s in params["cubes"][chosen.pretrain_task]["cube_size"]]
    size = tuple(cube[:chosen.spatial_dims])
    batch = int(batch or settings["batch_size"])
    # steps: a nominal run length for the momentum schedule (the EMA coefficient does not change a step's cost)
    values = method_settings(method, settings, n_data=n_data or max(batch * 64, 1), steps=NOMINAL_STEPS)
    values.update(overrides or {})
    torch.manual_seed(0)
    model = build_method(method, method_config(method, values)).to(device)
    memory_format = (torch.channels_last if chosen.spatial_dims == 2 else torch.channels_last_3d) if channels_last \
        else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    params_list = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params_list, lr=settings["lr"], momentum=settings["momentum"],
                          weight_decay=settings["weight_decay"])
    generator = torch.Generator(device=device).manual_seed(0)
    x1 = torch.rand(batch, 1, *size, device=device).to(memory_format=memory_format)
    x2 = torch.rand(batch, 1, *size, device=device).to(memory_format=memory_format)
    mode = resolve_amp(amp or settings.get("amp", "auto"), device)
    dtype = amp_dtype(mode)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    forward: Callable[..., Any] = wrap(model) if wrap else model
    if compile_step:
        forward = torch.compile(forward)

    def run() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = forward(x1, x2, generator)["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        model.after_step()

    return Step(run, model, batch, size, str(mode))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def outside_convolutions(step: Step, device: torch.device, steps: int = 2) -> float:
    """The share of a step's operator time spent outside convolutions (torch.profiler:
    self time of every operator, convolutions forward and backward counted as inside)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step.run()
        synchronize(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events)
    conv = sum(getattr(e, attr) for e in events if any(op in e.key for op in CONV_OPS))
    return 1.0 - conv / total if total else float("nan")
