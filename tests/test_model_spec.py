"""ModelSpec: the fields TrainConfig and ModelCard share, their validation, and the unchanged files they write."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from agekit.card import ModelCard
from agekit.engine import TrainConfig
from agekit.model_spec import IDENTITY_FIELDS, ModelSpec

COMMITTED_CARDS = sorted(Path("checkpoints").glob("*/config.json"))
TRAINING_RESULT_KEYS = ("sources", "result")  # what training.train.build_card adds to asdict(TrainConfig)


def test_card_and_config_carry_the_spec_fields_and_check_them_alike() -> None:
    spec_names = [f.name for f in fields(ModelSpec)]
    assert set(spec_names) <= {f.name for f in fields(ModelCard)} & {f.name for f in fields(TrainConfig)}
    assert IDENTITY_FIELDS == ("architecture", "tasks", "shared_backbone", "architecture_kwargs", "input_size",
                               "in_chans")
    def card(**values) -> ModelCard:
        return ModelCard(**{"name": "m", "family": "scratch", "architecture": "facecnn", "tasks": ("age",), **values})

    for build in (TrainConfig, card):
        assert build(tasks=["gender", "age"]).tasks == ("age", "gender")
        assert build(mean=[0, 1, 1]).mean == (0.0, 1.0, 1.0)
        with pytest.raises(ValueError, match="mean/std need 1"):
            build(in_chans=1)
        with pytest.raises(ValueError, match="unknown or empty task list"):
            build(tasks=("height",))


def test_preprocessing_card_copies_the_spec() -> None:
    config = TrainConfig(architecture="facecnn", tasks=("age",), shared_backbone=False, input_size=32, in_chans=1,
                         mean=(0.4,), std=(0.3,), architecture_kwargs={"widths": [8]})
    card = config.preprocessing_card(name="m", family="scratch")
    assert card.spec_values() == {**config.spec_values(), "architecture_kwargs": {"widths": [8], "in_chans": 1}}


@pytest.mark.skipif(not COMMITTED_CARDS, reason="no committed checkpoints")
@pytest.mark.parametrize("path", COMMITTED_CARDS, ids=lambda p: p.parent.name)
def test_committed_config_json_reads_and_writes_back_unchanged(path: Path) -> None:
    card = ModelCard.load(path.parent)
    assert card.to_json() + "\n" == path.read_text()
    if card.train_config:
        values = {k: v for k, v in card.train_config.items() if k not in TRAINING_RESULT_KEYS}
        written = json.loads(json.dumps(asdict(TrainConfig.from_dict(values))))
        assert {k: written[k] for k in values} == values
