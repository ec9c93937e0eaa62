"""pcrl.finetune (train, losses, flips, selection) and the engine's early stopping: losses,
flips, validation, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from pcrl.engine import TrainConfig, last_checkpoint, load_checkpoint, train
from pcrl.errors import ConfigError, DataError
from pcrl.finetune.models import NetworkConfig, seeded_network
from pcrl.finetune.flips import flip_dims, random_flips
from pcrl.finetune.losses import DiceBCELoss, build_loss
from pcrl.finetune.selection import EarlyStopping, ValidationHook
from pcrl.finetune.train import FinetuneModule, finetune


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ losses and flips


def _dice_loss_by_hand(logits: Tensor, target: Tensor, smooth: float = 1e-5) -> Tensor:
    p = torch.sigmoid(logits)
    dims = tuple(range(2, logits.ndim))
    inter = (p * target).sum(dims)
    dice = (2 * inter + smooth) / (p.sum(dims) + target.sum(dims) + smooth)
    return (1 - dice).mean()


def _bce_by_hand(logits: Tensor, target: Tensor) -> Tensor:
    p = torch.sigmoid(logits)
    return -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()


def test_dice_bce_is_monai_dice_ce_for_one_channel() -> None:
    from monai.losses import DiceCELoss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 4, 4, 4, generator=g)
    target = (torch.rand(2, 1, 4, 4, 4, generator=g) > 0.5).float()
    ours = DiceBCELoss()(logits, target)
    torch.testing.assert_close(ours, DiceCELoss(sigmoid=True)(logits, target))
    torch.testing.assert_close(ours, _dice_loss_by_hand(logits, target) + _bce_by_hand(logits, target))


def test_dice_bce_treats_channels_as_independent_sigmoids() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, 4, generator=g)
    wt = (torch.rand(2, 1, 4, 4, 4, generator=g) > 0.3).float()
    target = torch.cat([wt, wt * (torch.rand(2, 1, 4, 4, 4, generator=g) > 0.5), wt * 0], dim=1)
    expected = _dice_loss_by_hand(logits, target) + _bce_by_hand(logits, target)
    torch.testing.assert_close(DiceBCELoss()(logits, target), expected)
    with pytest.raises(ValueError, match="same shape"):
        DiceBCELoss()(logits, target[:, :1])


def test_build_loss() -> None:
    from monai.losses import DiceFocalLoss

    assert isinstance(build_loss("ncc"), nn.BCEWithLogitsLoss)
    assert isinstance(build_loss("bms", "dice_focal"), DiceFocalLoss)
    assert isinstance(build_loss("lcs"), DiceBCELoss)
    with pytest.raises(ConfigError, match="loss must be"):
        build_loss("lcs", "dice")


def test_random_flips_match_the_drawn_axes() -> None:
    x = torch.arange(4 * 2 * 2 * 3 * 4, dtype=torch.float32).reshape(4, 2, 2, 3, 4)
    y = x * 10
    fx, fy = random_flips(x, torch.Generator().manual_seed(3), y)
    draws = torch.rand((4, 3), generator=torch.Generator().manual_seed(3)) < 0.5
    for i in range(4):
        dims = [d - 1 for d in (2, 3, 4) if draws[i, d - 2]]  # per-sample tensor: (C, x, y, z)
        expected = x[i].flip(dims) if dims else x[i]
        assert torch.equal(fx[i], expected) and torch.equal(fy[i], expected * 10)
    assert draws.any() and not draws.all()  # the check covers flipped and kept axes


def test_chest14_loss_is_the_mean_bce_over_findings_and_images() -> None:
    logits = torch.tensor([[2.0, -1.0] + [0.0] * 12, [-3.0, 0.5] + [1.0] * 12])
    target = torch.zeros(2, 14)
    target[0, 0] = target[1, 1] = target[1, 5] = 1.0
    p = torch.sigmoid(logits)
    by_hand = -(target * p.log() + (1 - target) * (1 - p).log()).sum() / 28
    torch.testing.assert_close(build_loss("chest14", "dice_focal")(logits, target), by_hand)


def test_radiographs_flip_left_right_only() -> None:
    assert flip_dims("chest14") == (3,) and flip_dims("ncc") is None and flip_dims("bms") is None
    x = torch.arange(6 * 1 * 2 * 3, dtype=torch.float32).reshape(6, 1, 2, 3)
    (fx,) = random_flips(x, torch.Generator().manual_seed(5), dims=(3,))
    draws = torch.rand((6, 1), generator=torch.Generator().manual_seed(5)) < 0.5
    for i in range(6):
        assert torch.equal(fx[i], x[i].flip(-1) if draws[i, 0] else x[i])  # W reversed, H kept
    assert draws.any() and not draws.all()
    with pytest.raises(ValueError, match="not spatial dimensions"):
        random_flips(x, torch.Generator(), dims=(1,))  # the channel axis


def test_module_flips_radiographs_but_not_their_labels() -> None:
    class Columns(nn.Module):  # logits: the mean of each image column (order-sensitive)
        def forward(self, x: Tensor) -> Tensor:
            return x.mean(dim=2)[:, 0]

    x = torch.arange(4 * 1 * 2 * 3, dtype=torch.float32).reshape(4, 1, 2, 3)
    y = torch.tensor([[1.0, 0.0, 1.0]] * 4)
    seen = []
    loss = nn.BCEWithLogitsLoss()
    module = FinetuneModule(Columns(), loss, flip=True, flip_dims=flip_dims("chest14"))
    module.net.register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
    out = module(x, y, torch.Generator().manual_seed(5))
    draws = torch.rand((4, 1), generator=torch.Generator().manual_seed(5)) < 0.5
    expected = torch.stack([x[i].flip(-1) if draws[i, 0] else x[i] for i in range(4)])
    assert draws.any() and not draws.all()  # flipped and kept images both checked
    assert torch.equal(seen[0], expected)
    torch.testing.assert_close(out["loss"], loss(expected.mean(dim=2)[:, 0], y))


def test_module_folds_patches_into_the_batch() -> None:
    net = seeded_network("lcs", NetworkConfig(base=2), 0)
    module = FinetuneModule(net, DiceBCELoss(), flip=False)
    x = torch.rand(2, 3, 1, 8, 8, 8)
    y = (torch.rand(2, 3, 1, 8, 8, 8) > 0.5).float()
    out = module(x, y, torch.Generator())
    torch.testing.assert_close(out["loss"], DiceBCELoss()(net(x.flatten(0, 1)), y.flatten(0, 1)))


# ------------------------------------------------------------------ early stopping


def test_early_stopping_by_hand() -> None:
    stop = EarlyStopping("auc", patience=2)
    decisions = []
    for epoch, value in enumerate([0.5, 0.7, 0.6, 0.7, 0.65], start=1):
        stop.record(epoch, {"auc": value})
        decisions.append((stop.best_epoch, stop.should_stop()))
    # a tie (0.7 at epoch 4) does not improve; 2 epochs after epoch 2 -> stop at 4
    assert decisions == [(1, False), (2, False), (2, False), (2, True), (2, True)]
    stop.record(4, {"auc": 0.7})  # replaying an epoch changes nothing
    assert (stop.best_epoch, stop.last_epoch) == (2, 5)
    assert EarlyStopping.from_json(json.loads(json.dumps(stop.to_json()))).history == stop.history


def test_nan_never_improves() -> None:
    stop = EarlyStopping("dice_mean", patience=2)
    stop.record(1, {"dice_mean": float("nan")})
    assert stop.best_epoch is None and not stop.should_stop()
    stop.record(2, {"dice_mean": float("nan")})
    assert stop.should_stop()
    with pytest.raises(KeyError, match="lack 'dice_mean'"):
        stop.record(3, {"auc": 1.0})
    with pytest.raises(ConfigError, match="patience"):
        EarlyStopping("auc", patience=0)


def test_hook_keeps_the_best_weights_and_survives_a_restart(tmp_path: Path) -> None:
    net = nn.Linear(2, 1)
    scores = iter([0.4, 0.9, 0.5])
    hook = ValidationHook(lambda n: {"auc": next(scores)}, tmp_path, monitor="auc", patience=3)
    saved = {}
    for epoch in (1, 2, 3):
        with torch.no_grad():
            net.weight.fill_(epoch)
        saved[epoch] = net.weight.clone()
        assert hook(epoch, FinetuneModule(net, nn.MSELoss()), None) is False
    best = hook.best()
    assert best["epoch"] == 2 and torch.equal(best["state_dict"]["weight"], saved[2])
    state = json.loads((tmp_path / "checkpoints" / "validation.json").read_text())
    assert state["best_epoch"] == 2 and list(state["history"]) == ["1", "2", "3"]
    again = ValidationHook(lambda n: {"auc": 0.1}, tmp_path, monitor="auc", patience=3)
    assert again.state.history == hook.state.history
    assert again(4, FinetuneModule(net, nn.MSELoss()), None) is False  # 2 epochs since the best
    assert again(5, FinetuneModule(net, nn.MSELoss()), None) is True
    with pytest.raises(ConfigError, match="patience 3; delete the state folder"):
        ValidationHook(lambda n: {}, tmp_path, monitor="auc", patience=5)


# ------------------------------------------------------------------ the engine's early stop


class Pairs(Dataset):
    """Random (image, mask) pairs (1, 8, 8, 8)."""

    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 1, 8, 8, 8, generator=g)
        self.y = (self.x > 0.6).float()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]


def _module() -> FinetuneModule:
    return FinetuneModule(seeded_network("lcs", NetworkConfig(base=2), 0), DiceBCELoss())


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 5, "batch_size": 4, "lr": 0.05, "progress": False,
                          "checkpoint_every": 5, **kw})


def test_engine_stops_when_the_hook_says_so_and_a_rerun_trains_nothing(tmp_path: Path) -> None:
    calls = []

    def hook(epoch: int, method: nn.Module, live: object) -> bool:
        calls.append(epoch)
        return epoch == 2

    result = train(_module(), Pairs(), _config(), tmp_path, device="cpu", on_epoch_end=hook)
    assert result.epochs_run == [1, 2] and result.stopped_early and calls == [1, 2]
    checkpoint = load_checkpoint(last_checkpoint(tmp_path))
    assert checkpoint["epoch"] == 2 and checkpoint["early_stopped"] is True
    again = train(_module(), Pairs(), _config(), tmp_path, device="cpu", on_epoch_end=hook)
    assert again.epochs_run == [] and again.stopped_early and calls == [1, 2]
    full = train(_module(), Pairs(), _config(epochs=2), tmp_path / "full", device="cpu",
                 on_epoch_end=lambda *a: None)
    assert full.epochs_run == [1, 2] and not full.stopped_early
    assert load_checkpoint(last_checkpoint(tmp_path / "full"))["early_stopped"] is False


def _weights_score(net: nn.Module) -> dict[str, float]:
    """A deterministic 'validation' that depends on the weights only."""
    total = sum(float(p.detach().double().sum()) for p in net.parameters())
    return {"dice_mean": float(np.cos(total)), "sum": total}


def test_finetune_stops_on_patience_and_returns_the_best_epoch(tmp_path: Path) -> None:
    scores = iter([0.2, 0.6, 0.5, 0.55, 0.9])
    seen = {}

    def validate(net: nn.Module) -> dict[str, float]:
        seen[len(seen) + 1] = {k: v.clone() for k, v in net.state_dict().items()}
        return {"dice_mean": next(scores)}

    result = finetune(_module(), Pairs(), validate, _config(), tmp_path, monitor="dice_mean",
                      patience=2, device=torch.device("cpu"))
    assert (result.best_epoch, result.epochs_done, result.stopped_early) == (2, 4, True)
    for key, value in seen[2].items():
        assert torch.equal(result.best_state[key], value), key
    assert result.best_metrics == {"dice_mean": 0.6}


def test_a_validation_lost_in_a_crash_is_caught_up_on_resume(tmp_path: Path) -> None:
    reference = finetune(_module(), Pairs(), _weights_score, _config(epochs=4), tmp_path / "ref",
                         monitor="dice_mean", patience=10, device=torch.device("cpu"))

    def crash_at_epoch_3(net: nn.Module) -> dict[str, float]:
        score = _weights_score(net)
        if crash_at_epoch_3.calls == 2:
            raise KeyboardInterrupt("killed during validation")
        crash_at_epoch_3.calls += 1
        return score

    crash_at_epoch_3.calls = 0
    with pytest.raises(KeyboardInterrupt):
        finetune(_module(), Pairs(), crash_at_epoch_3, _config(epochs=4), tmp_path / "run",
                 monitor="dice_mean", patience=10, device=torch.device("cpu"))
    assert load_checkpoint(last_checkpoint(tmp_path / "run"))["epoch"] == 3  # saved, not validated
    resumed = finetune(_module(), Pairs(), _weights_score, _config(epochs=4), tmp_path / "run",
                       monitor="dice_mean", patience=10, device=torch.device("cpu"))
    assert resumed.history == reference.history  # epoch 3 validated from last.pt, exactly
    assert resumed.best_epoch == reference.best_epoch


class CountingModule(FinetuneModule):
    """A FinetuneModule counting its SGD steps."""

    def __init__(self) -> None:
        super().__init__(seeded_network("lcs", NetworkConfig(base=2), 0), DiceBCELoss())
        self.steps = 0

    def after_step(self) -> None:
        self.steps += 1


def test_finetune_with_few_items_takes_min_steps_per_epoch(tmp_path: Path) -> None:
    """6 items, batch 4: one step an epoch (2 items dropped) without the setting; with
    ``min_steps_per_epoch`` 3, 3 steps an epoch, as many each epoch (12 in 4 epochs)."""
    def validate(net: nn.Module) -> dict[str, float]:
        return {"dice_mean": 0.5}

    plain = CountingModule()
    finetune(plain, Pairs(6), validate, _config(epochs=4), tmp_path / "plain",
             monitor="dice_mean", patience=10, device=torch.device("cpu"))
    assert plain.steps == 4
    filled = CountingModule()
    result = finetune(filled, Pairs(6), validate, _config(epochs=4, min_steps_per_epoch=3),
                      tmp_path / "filled", monitor="dice_mean", patience=10,
                      device=torch.device("cpu"))
    assert result is not None and filled.steps == 12 and result.epochs_done == 4
    assert load_checkpoint(last_checkpoint(tmp_path / "filled"))["config"][
        "min_steps_per_epoch"] == 3


def test_the_stage_passes_min_steps_per_epoch_to_the_engine() -> None:
    from pcrl.distributed import DistInfo
    from pcrl.stages.finetune import _train_config

    task = {"epochs": 10, "patience": 3, "batch_size": 8, "lr": 0.05}
    dist = DistInfo(device=torch.device("cpu"))

    def build(**extra: object) -> TrainConfig:
        return _train_config({**task, **extra}, {"amp": "off"}, 12, dist, seed=0,
                             num_workers=1, progress=False, what="ncc")

    assert build(min_steps_per_epoch=8).min_steps_per_epoch == 8
    assert build(min_steps_per_epoch=None).min_steps_per_epoch is None
    assert build().min_steps_per_epoch is None  # params without the key: as before
    with pytest.raises(ConfigError, match="min_steps_per_epoch"):
        build(min_steps_per_epoch=0)


def test_a_corrupt_best_checkpoint_is_named(tmp_path: Path) -> None:
    hook = ValidationHook(lambda n: {"auc": 0.7}, tmp_path, monitor="auc", patience=3)
    hook.record(1, torch.nn.Linear(2, 1), {"auc": 0.7})
    hook.best_path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DataError, match=f"{hook.best_path}: not a readable best-epoch checkpoint") as info:
        hook.best()
    assert "weights_only" not in str(info.value)
