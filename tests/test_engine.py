"""Training loop: learning on a tiny synthetic set, metrics, sampling, early stopping, resume, the CLI."""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import replace

import pytest
import torch
import yaml
from torch import nn

from agekit.checkpoint import load_checkpoint
from agekit.data.dataset import FaceTensors
from agekit.engine import (
    TrainConfig,
    build_criterion,
    build_model,
    build_optimizer,
    build_scheduler,
    epoch_indices,
    evaluate,
    fit,
    loop,
    lr_factor,
    shard,
    stratum_weights,
)
from agekit.labels import NUM_AGES, UTK7
from agekit.losses import MultiTaskLoss

AGES = (1, 10, 30, 50, 70)


def colour_coded_faces(n: int = 64, seed: int = 0, size: int = 16) -> FaceTensors:
    """Faces whose colour encodes the labels: red = gender, green = ethnicity, blue = age."""
    g = torch.Generator().manual_seed(seed)
    gender = torch.randint(0, 2, (n,), generator=g)
    ethnicity = torch.randint(0, 5, (n,), generator=g)
    age = torch.tensor(AGES)[torch.randint(0, len(AGES), (n,), generator=g)]
    colour = torch.stack([40 + 170 * gender, 30 + 45 * ethnicity, 20 + 3 * age], dim=1).float()
    noise = torch.randn(n, 3, size, size, generator=g) * 8
    images = (colour[:, :, None, None] + noise).clamp(0, 255).to(torch.uint8)
    return FaceTensors(images, age, gender, ethnicity, [f"{i}.jpg" for i in range(n)], manifest_hash="synthetic")


def tiny_config(**overrides) -> TrainConfig:
    values = {"architecture": "facecnn", "architecture_kwargs": {"widths": [8, 16]}, "input_size": 16,
              "epochs": 4, "batch_size": 16, "lr": 1e-2, "weight_decay": 0.0, "warmup_epochs": 0,
              "augment": False, "patience": 0, "device": "cpu", "progress": False, "seed": 0}
    return TrainConfig(**{**values, **overrides})


def test_a_few_epochs_learn_the_colour_code(tmp_path) -> None:
    train, val = colour_coded_faces(64, seed=0), colour_coded_faces(32, seed=1)
    result = fit(tiny_config(epochs=6, batch_size=8), train, val, out_dir=tmp_path)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert result.history[-1]["val_gender_acc"] > 0.9
    assert not result.model.training
    with open(tmp_path / "training_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    for column in ("lr", "train_loss", "val_loss", "val_age_mae", "val_age_bin_f1", "val_gender_acc",
                   "val_ethnicity_acc", "seconds", "images_per_s"):
        assert column in rows[0]
    assert (tmp_path / "resume.pt").is_file()


def test_every_option_together_runs() -> None:
    config = tiny_config(epochs=2, loss_weighting="uncertainty", augment=True, weighted_sampler=True,
                         sampler_strata="age_bin_ethnicity", class_weights=True, label_smoothing=0.1,
                         scheduler="onecycle", optimizer="nadam", channels_last=True)
    result = fit(config, colour_coded_faces(48), colour_coded_faces(16, seed=1))
    assert set(result.loss_weights) == {"age", "gender", "ethnicity"}
    assert result.loss_weights != {"age": 1.0, "gender": 1.0, "ethnicity": 1.0}  # the log-variances moved
    assert "weight_age" in result.history[-1]


class FixedLogits(nn.Module):
    """Returns preset logits (ignores the images): lets evaluate() be checked against known answers."""

    def __init__(self, logits: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.logits


def test_evaluate_on_perfect_and_known_predictions() -> None:
    data = colour_coded_faces(20)
    targets = data.targets
    logits = {"age": 50 * nn.functional.one_hot(targets["age"], NUM_AGES).float(),
              "gender": 50 * nn.functional.one_hot(targets["gender"], 2).float(),
              "ethnicity": 50 * nn.functional.one_hot((targets["ethnicity"] + 1) % 5, 5).float()}  # all wrong
    config = tiny_config(batch_size=64)
    metrics = evaluate(FixedLogits(logits), MultiTaskLoss(), data.images, targets, config.preprocessing_card(), config)
    assert metrics["val_age_mae"] == pytest.approx(0.0, abs=1e-3)
    assert metrics["val_age_bin_f1"] == pytest.approx(1.0)
    assert metrics["val_gender_acc"] == 1.0
    assert metrics["val_ethnicity_acc"] == 0.0
    assert metrics["val_loss"] == pytest.approx(
        metrics["val_age_loss"] + metrics["val_gender_loss"] + metrics["val_ethnicity_loss"])


def test_weighted_sampler_balances_age_bins() -> None:
    ages = torch.tensor([1] * 90 + [30] * 10)  # bins 0 and 3 of utk7
    targets = {"age": ages, "ethnicity": torch.zeros(100, dtype=torch.long)}
    weights = stratum_weights(targets, "age_bin", "utk7")
    assert weights[:90].sum().item() == pytest.approx(weights[90:].sum().item())
    drawn = epoch_indices(100, torch.Generator().manual_seed(0), weights)
    share_old = (UTK7.bin_of(ages[drawn].numpy()) == 3).mean()
    assert 0.35 < share_old < 0.65
    assert sorted(epoch_indices(10, torch.Generator().manual_seed(0)).tolist()) == list(range(10))


def test_shards_are_disjoint_and_equal() -> None:
    order = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    parts = [shard(order, rank, 2) for rank in range(2)]
    assert len(parts[0]) == len(parts[1]) == 5
    assert not set(parts[0].tolist()) & set(parts[1].tolist())


def test_lr_schedules() -> None:
    cosine = [lr_factor(s, 100, 10, "cosine") for s in range(100)]
    assert cosine[0] == pytest.approx(0.1) and cosine[9] == pytest.approx(1.0)
    assert cosine[-1] < 0.01 and all(a >= b for a, b in itertools.pairwise(cosine[10:]))
    onecycle = [lr_factor(s, 100, 0, "onecycle") for s in range(100)]
    assert onecycle[0] == pytest.approx(1 / 25) and max(onecycle) == pytest.approx(1.0) and onecycle[-1] < 0.01


def test_a_released_backbone_is_warmed_up_again() -> None:
    # 10 steps an epoch, 1 frozen epoch, a 5-step warm-up: the heads follow the cosine schedule; the backbone
    # starts its own ramp at step 10 instead of meeting the schedule's peak lr with empty Adam moments
    config = tiny_config(epochs=4, frozen_epochs=1, warmup_epochs=0.5, backbone_lr_mult=0.5)
    model = build_model(config)
    optimizer = build_optimizer(model, build_criterion(config), config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append({group["name"]: group["lr"] for group in optimizer.param_groups})
        optimizer.step()
        scheduler.step()
    heads = [row["heads_decay"] / config.lr for row in lrs]
    backbone = [row["backbone_decay"] / (config.lr * 0.5) for row in lrs]
    assert heads == pytest.approx([lr_factor(s, 40, 5, "cosine") for s in range(40)])
    assert backbone[:10] == [0.0] * 10
    assert backbone[10:15] == pytest.approx([heads[s] * (s - 9) / 5 for s in range(10, 15)])
    assert backbone[15:] == pytest.approx(heads[15:])
    # nothing frozen: the backbone keeps the heads' schedule
    plain = replace(config, frozen_epochs=0)
    optimizer = build_optimizer(build_model(plain), build_criterion(plain), plain)
    build_scheduler(optimizer, plain, steps_per_epoch=10)
    backbone_lrs = [group["lr"] for group in optimizer.param_groups if group["name"].startswith("backbone")]
    assert backbone_lrs == pytest.approx([plain.lr * 0.5 * lr_factor(0, 40, 5, "cosine")] * len(backbone_lrs))


def test_frozen_epochs_train_only_the_heads() -> None:
    train, val = colour_coded_faces(32), colour_coded_faces(16, seed=1)
    torch.manual_seed(0)
    model = build_model(tiny_config())
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(tiny_config(epochs=1, frozen_epochs=1), train, val, model=model)
    after = result.model.state_dict()
    conv = "backbone.blocks.0.0.0.weight"
    assert torch.equal(after[conv], initial[conv])
    assert not torch.equal(after["heads.age.fc.weight"], initial["heads.age.fc.weight"])
    assert all(p.requires_grad for p in result.model.parameters())  # unfrozen again for whoever uses it next


def _scripted_evaluate(monkeypatch, val_losses: dict[str, list[float]], snapshots: list[dict]) -> None:
    """Replace evaluate() by one returning scripted per-task val losses and recording the model each epoch."""
    calls = iter(range(100))

    def fake_evaluate(model, criterion, images, targets, card, config):
        epoch = next(calls)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        metrics = {f"val_{task}_loss": losses[epoch] for task, losses in val_losses.items()}
        return {"val_loss": sum(metrics.values()), **metrics}

    monkeypatch.setattr(loop, "evaluate", fake_evaluate)


def test_early_stopping_keeps_the_best_epoch(monkeypatch) -> None:
    snapshots: list[dict] = []
    _scripted_evaluate(monkeypatch, {"age": [3.0, 2.0, 2.5, 2.6, 2.7, 1.0], "gender": [1.0] * 6,
                                     "ethnicity": [1.0] * 6}, snapshots)
    result = fit(tiny_config(epochs=6, patience=2), colour_coded_faces(32), colour_coded_faces(8, seed=1))
    assert result.stopped_early and len(result.history) == 4
    assert result.best_epoch == {"all": 2}
    state = result.model.state_dict()
    assert all(torch.equal(state[k], snapshots[1][k]) for k in state)


def test_bundle_members_keep_their_own_best_epoch(monkeypatch) -> None:
    snapshots: list[dict] = []
    _scripted_evaluate(monkeypatch, {"age": [3.0, 2.0, 2.5], "gender": [1.0, 1.1, 0.9]}, snapshots)
    config = tiny_config(epochs=3, tasks=("age", "gender"), shared_backbone=False)
    result = fit(config, colour_coded_faces(32), colour_coded_faces(8, seed=1))
    assert result.best_epoch == {"age": 2, "gender": 3}
    state = result.model.state_dict()
    for key in state:
        expected = snapshots[1] if key.startswith(("backbones.age.", "heads.age.")) else snapshots[2]
        assert torch.equal(state[key], expected[key]), key


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path, monkeypatch) -> None:
    train, val = colour_coded_faces(48), colour_coded_faces(16, seed=1)
    config = tiny_config(epochs=3, augment=True, loss_weighting="uncertainty", head_dropout=0.3)
    reference = fit(config, train, val, out_dir=tmp_path / "straight")

    real_train_one_epoch, calls = loop.train_one_epoch, []

    def crash_in_third_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return real_train_one_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(config, train, val, out_dir=tmp_path / "resumed")
    monkeypatch.setattr(loop, "train_one_epoch", real_train_one_epoch)
    resumed = fit(config, train, val, out_dir=tmp_path / "resumed", resume=True)

    expected, state = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in reference.history]
    with open(tmp_path / "resumed" / "training_log.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 3

    with pytest.raises(ValueError, match="different model"):
        fit(replace(config, architecture_kwargs={"widths": [8, 8]}), train, val, out_dir=tmp_path / "resumed",
            resume=True)
    with pytest.raises(FileNotFoundError, match="no resume.pt"):
        fit(config, train, val, out_dir=tmp_path / "nothing", resume=True)


def test_time_limit_stops_before_an_epoch_that_would_overrun_it(tmp_path, monkeypatch) -> None:
    now = [0.0]
    monkeypatch.setattr(loop, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: now[0])}))
    real_train_one_epoch = loop.train_one_epoch

    def ten_seconds_per_epoch(*args, **kwargs):
        now[0] += 10.0
        return real_train_one_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", ten_seconds_per_epoch)
    train, val = colour_coded_faces(32), colour_coded_faces(8, seed=1)
    result = fit(tiny_config(epochs=5, time_limit_s=25, save_resume=False), train, val, out_dir=tmp_path)
    assert len(result.history) == 2 and result.out_of_time and not result.stopped_early  # 20 s + 10 s > 25 s
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training_log.csv"]  # no resume.pt
    assert not fit(tiny_config(epochs=2, time_limit_s=25), train, val).out_of_time  # the schedule ended first
    assert len(fit(tiny_config(epochs=3), train, val).history) == 3  # 0: no limit


def test_config_rejects_unknown_keys_and_values() -> None:
    with pytest.raises(ValueError, match="unknown training config keys \\['learning_rate'\\]"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="mean/std need 1"):
        TrainConfig(in_chans=1)


# ---------------------------------------------------------------- training CLI
def test_overrides_parse_as_yaml() -> None:
    from training.train import parse_overrides

    overrides = parse_overrides(["lr=3e-4", "tasks=[age]", "task_weights.age=0.5", "pretrained_weights="])
    assert overrides == {"lr": "3e-4", "tasks": ["age"], "task_weights": {"age": 0.5}, "pretrained_weights": None}
    assert TrainConfig.from_dict(overrides).lr == 3e-4  # YAML 1.1 reads 3e-4 as text; the config converts it
    with pytest.raises(ValueError, match="lr must be a number"):
        TrainConfig(lr="fast")


def test_shipped_configs_are_valid() -> None:
    from pathlib import Path

    from training.train import RUN_KEYS

    configs = sorted(Path("training/configs").glob("*.yaml"))
    assert len(configs) >= 5
    for path in configs:
        raw = yaml.safe_load(path.read_text())
        assert raw["family"] in ("scratch", "pretrained", "multitask"), path
        TrainConfig.from_dict({k: v for k, v in raw.items() if k not in RUN_KEYS})


def test_cli_trains_and_writes_a_loadable_checkpoint(tmp_path, monkeypatch) -> None:
    from training import train as train_cli

    sets = {"train": colour_coded_faces(32), "val": colour_coded_faces(16, seed=1)}
    monkeypatch.setattr("agekit.data.dataset.load_pack", lambda path, split: sets[split])
    pack = tmp_path / "faces.safetensors"
    pack.write_bytes(b"stand-in; load_pack is replaced above")
    config_file = tmp_path / "tiny.yaml"
    config = {k: v for k, v in vars(tiny_config()).items() if k != "tasks"}
    config.update(name="tiny", family="scratch", description="test run", mean=[0.5] * 3, std=[0.5] * 3)
    config_file.write_text(yaml.safe_dump(config))
    out = train_cli.main(["--config", str(config_file), "--pack", str(pack), "--out", str(tmp_path / "ckpt"),
                          "--epochs", "2", "tasks=[age, gender]", "lr=0.005"])
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "training_log.csv"]
    loaded = load_checkpoint(out)
    card = json.loads((out / "config.json").read_text())
    assert loaded.card.tasks == ("age", "gender") and card["split_hash"] == "synthetic"
    assert card["init_source"] == "random" and card["train_config"]["lr"] == 0.005
    assert card["train_config"]["result"]["epochs_run"] == 2 and card["params"] > 0
    assert card["architecture_kwargs"] == {"widths": [8, 16], "in_chans": 3, "convs_per_block": 2}
