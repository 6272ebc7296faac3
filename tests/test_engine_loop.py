"""The one training loop (reid.engine.loop), run for every network that trains on it: a killed run
resumes to the same weights and curves as an uninterrupted one, a checkpoint of other settings is not
resumed, a killed save's temp file is cleared. Each network's own behaviour is tested beside it."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from killutil import Killed, kill_on_call, live_steps
from test_densepose_lite import fake_samples
from test_densepose_lite import tiny_config as lite_config
from test_sanpg import TILE, make_pit
from test_sanpg import tiny_config as sanpg_config
from test_trainer import make_manifest, new_model
from test_trainer import tiny_config as reid_config
from torch import nn

import reid.engine.loop as loop
from reid.data.torch_dataset import ReidDataset
from reid.data.transforms import train_transform
from reid.densepose.lite_train import train_lite, training_arrays
from reid.device import autocast_dtype
from reid.engine.artifacts import NetworkFolder
from reid.engine.checkpoint import checkpoint_file, load_checkpoint
from reid.engine.loop import FitConfig, MappedBatches, fit, run_key
from reid.engine.trainer import train
from reid.sanpg.data import load_pit, split_by_texture
from reid.sanpg.train import initial_model, train_sanpg

EPOCHS = 3
Run = Callable[..., nn.Module]  # run(folder, **config changes) -> the trained model


def reid_run(tmp: Path) -> Run:
    dataset = ReidDataset(make_manifest(tmp / "reid-data"), train_transform((16, 8)))

    def run(folder: Path, **changes) -> nn.Module:
        model = new_model()  # a new process: fresh init, everything else from the checkpoint
        train(model, dataset, reid_config(**{"epochs": EPOCHS, **changes}), folder, live_dir=folder / "curves")
        return model
    return run


def lite_run(tmp: Path) -> Run:
    images, iuvs = fake_samples(10)
    data = training_arrays(images, iuvs, lite_config().arch())

    def run(folder: Path, **changes) -> nn.Module:
        model, _ = train_lite(lite_config(**{"epochs": EPOCHS, **changes}), data, NetworkFolder.at(folder, folder / "curves"))
        return model
    return run


def sanpg_run(tmp: Path) -> Run:
    data = load_pit(make_pit(tmp / "pit", poses=2), TILE, progress=False)
    train_idx, held_idx = split_by_texture(data.texture_of, 0.25, seed=0)

    def run(folder: Path, **changes) -> nn.Module:
        # augmentation on, so the resumed epoch's draws matter
        cfg = sanpg_config(**{"epochs": EPOCHS, "batch_size": 6, "crop_scale": 1.125, "erasing_p": 0.5, **changes})
        model = initial_model(cfg)
        train_sanpg(model, data, train_idx, held_idx, cfg, folder / "checkpoint", live_dir=folder / "curves")
        return model
    return run


NETWORKS = {"reid": reid_run, "lite": lite_run, "sanpg": sanpg_run}


@pytest.fixture(params=sorted(NETWORKS))
def network(request, tmp_path, monkeypatch) -> Run:
    monkeypatch.chdir(tmp_path)  # DVCLive looks for a DVC repo from the working directory
    return NETWORKS[request.param](tmp_path)


def curves(folder: Path) -> dict[str, str]:
    return {tsv.name: tsv.read_text() for tsv in sorted((folder / "curves" / "plots" / "metrics").glob("*.tsv"))}


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_a_killed_run_resumes_to_the_weights_and_curves_of_an_uninterrupted_one(network, tmp_path, monkeypatch):
    whole = network(tmp_path / "whole")
    with monkeypatch.context() as patch:
        kill_on_call(patch, loop, "save_checkpoint", 2)  # epoch 2 is logged, its checkpoint never written
        with pytest.raises(Killed):
            network(tmp_path / "killed")
    assert int(load_checkpoint(checkpoint_file(tmp_path / "killed" / "checkpoint"))["epoch"]) == 1
    resumed = network(tmp_path / "killed")  # resumes at epoch 2, logging it again
    assert_same_weights(whole, resumed)
    steps = live_steps(tmp_path / "killed" / "curves")
    assert "loss" in steps and "lr" in steps and not {"epoch_time_s", "images_per_s"} & set(steps)  # no timings
    assert all(column == list(range(EPOCHS)) for column in steps.values()), steps  # each epoch once
    assert curves(tmp_path / "killed") == curves(tmp_path / "whole")


def test_a_checkpoint_of_other_settings_is_not_resumed(network, tmp_path):
    first = network(tmp_path / "run", epochs=1)
    with pytest.warns(UserWarning, match="other settings"):
        other = network(tmp_path / "run", epochs=1, lr=1e-3)
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values(), strict=True))
    assert live_steps(tmp_path / "run" / "curves")["loss"] == [0]  # the restarted run wiped the old curve


def test_a_finished_run_is_not_retrained(network, tmp_path):
    done = network(tmp_path / "run", epochs=1)
    mtime = (tmp_path / "run" / "checkpoint" / "last.pt").stat().st_mtime_ns
    again = network(tmp_path / "run", epochs=1)  # nothing left to do: the weights come from the checkpoint
    assert_same_weights(done, again)
    assert (tmp_path / "run" / "checkpoint" / "last.pt").stat().st_mtime_ns == mtime


def test_a_restored_run_rewrites_curves_that_were_deleted(network, tmp_path):
    whole = network(tmp_path / "run", epochs=2)
    expected = curves(tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "curves")  # `rm -rf metrics/train/<model>`, then `dvc repro`
    again = network(tmp_path / "run", epochs=2)  # nothing left to train: restored from the checkpoint
    assert_same_weights(whole, again)
    assert curves(tmp_path / "run") == expected and len(expected) >= 2


def test_a_resumed_run_replaces_curves_of_another_run(network, tmp_path):
    network(tmp_path / "short", epochs=1)
    network(tmp_path / "run", epochs=2)
    expected = curves(tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "curves")
    shutil.copytree(tmp_path / "short" / "curves", tmp_path / "run" / "curves")  # epoch 0 only, beside a 2-epoch network
    network(tmp_path / "run", epochs=2)
    assert curves(tmp_path / "run") == expected
    network(tmp_path / "run", epochs=3)  # and a continued run extends the rebuilt curves
    assert all(column == [0, 1, 2] for column in live_steps(tmp_path / "run" / "curves").values())


def test_a_killed_save_leaves_no_temp_file_behind(network, tmp_path):
    stale = tmp_path / "run" / "checkpoint" / ".last.pt.k1ll3d.tmp"  # what a kill during save_checkpoint leaves
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    network(tmp_path / "run", epochs=1)
    assert sorted(p.name for p in stale.parent.iterdir()) == ["last.pt"]


# --- the loop itself, on a task written here ---------------------------------------------------------

class LineTask:
    """Fit y = 2x with one weight: batches of varying size, so the per-sample mean is visible."""

    def __init__(self, schedule_gamma: float = 1.0) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(1, 1, bias=False)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, 1, gamma=schedule_gamma)
        self.drawn: list[float] = []

    def batches(self, epoch: int) -> MappedBatches:
        def make(n: int) -> dict[str, torch.Tensor]:
            x = torch.rand(n, 1)  # drawn from the epoch's seeded RNG, lazily
            self.drawn.append(float(x.sum()))
            return {"image": x, "target": 2 * x}
        return MappedBatches([3, 1], make)

    def loss_terms(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"mse": ((net(batch["image"]) - batch["target"]) ** 2).mean()}


def test_fit_logs_the_per_sample_mean_of_each_term_and_the_lr_at_the_epoch_start(tmp_path):
    task = LineTask(schedule_gamma=0.5)
    seen = []
    result = fit(task, FitConfig(epochs=2, device="cpu"), evaluate=lambda: {"heldout": float(task.model.weight)},
                 hooks=[_Record(seen)])
    assert [epoch["lr"] for epoch in result.history] == pytest.approx([0.1, 0.05])
    assert result.steps == 4 and set(result.history[0]) == {"loss", "loss_mse", "lr", "heldout"}
    assert result.history[0]["loss"] == result.history[0]["loss_mse"]
    assert seen == [1, 2]
    # the epoch's batches come from the RNG seeded by (seed, epoch): a second fit draws the same
    again = LineTask(schedule_gamma=0.5)
    fit(again, FitConfig(epochs=2, device="cpu"))
    assert again.drawn == task.drawn


def test_per_step_schedule_steps_after_every_optimiser_step():
    task = LineTask(schedule_gamma=0.5)
    result = fit(task, FitConfig(epochs=2, device="cpu", schedule="step"))
    assert [epoch["lr"] for epoch in result.history] == pytest.approx([0.1, 0.1 * 0.5**2])


def test_a_diverging_loss_stops_the_run():
    task = LineTask()
    task.loss_terms = lambda net, batch: {"nan": net(batch["image"]).sum() * float("nan")}
    with pytest.raises(FloatingPointError, match="epoch 1"):
        fit(task, FitConfig(epochs=1, device="cpu"))


def test_run_key_leaves_out_only_the_exempt_fields():
    a, b = reid_config(epochs=1), reid_config(epochs=5, device="cpu")
    assert run_key(a) == run_key(b)
    assert run_key(a) != run_key(reid_config(epochs=1, lr=1e-3))
    assert run_key(a, data="x") != run_key(a, data="y") and run_key(a) != run_key(a, world_size=2)
    assert run_key(a, exempt=("device",)) != run_key(b, exempt=("device",))  # epochs counted when not exempt


class _Record(loop.Hook):
    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    def after_epoch(self, trainer: loop.Trainer) -> None:
        self.seen.append(trainer.state.epoch)


def test_the_checkpoint_holds_tensors_only(tmp_path):
    task = LineTask()
    fit(task, FitConfig(epochs=1, device="cpu"), checkpoint_dir=tmp_path, key="k")
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert int(state["epoch"]) == 1 and int(state["steps"]) == 2
    json.dumps({k: float(v) for k, v in state["metrics"].items()})  # plain numbers


def test_a_finished_run_reports_the_same_losses_to_the_last_digit(tmp_path, monkeypatch):
    # the training record (metrics/train/<net>.json) of a run restored from its finished checkpoint
    # must equal the uninterrupted run's: the checkpoint keeps the losses as float64
    monkeypatch.chdir(tmp_path)
    dataset = ReidDataset(make_manifest(tmp_path / "data"), train_transform((16, 8)))
    done = train(new_model(), dataset, reid_config(epochs=2), tmp_path / "run")
    again = train(new_model(), dataset, reid_config(epochs=2), tmp_path / "run")
    assert again.first_metrics == done.first_metrics and again.metrics == done.metrics


def test_amp_policy_autocasts_on_the_cpu_only_when_asked_for_bf16():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("off", cpu) is None  # auto: CUDA only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no-native-bf16 warning, on such a CPU
        assert autocast_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="amp=fp16 needs CUDA"):
        autocast_dtype("fp16", cpu)


def test_a_bf16_run_on_the_cpu_trains_like_the_fp32_one(tmp_path):
    dataset = ReidDataset(make_manifest(tmp_path / "reid-data"), train_transform((16, 8)))
    results = {}
    for amp in ("off", "bf16"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results[amp] = train(new_model(), dataset, reid_config(epochs=2, amp=amp, device="cpu"), tmp_path / amp)
    fp32, bf16 = (results[a].history for a in ("off", "bf16"))
    assert [e["loss"] for e in bf16] == pytest.approx([e["loss"] for e in fp32], rel=0.05)
    assert [e["loss"] for e in bf16] != [e["loss"] for e in fp32]  # bf16 did autocast: not the same digits
