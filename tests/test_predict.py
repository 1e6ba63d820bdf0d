"""ModelZoo: loading good / broken checkpoint folders, batched prediction and decoding to probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agekit.labels import GENDER_NAMES, NUM_AGES, UTK7, get_age_bins
from agekit.predict import ModelZoo, Prediction, crops_to_batch, decode_outputs


def random_crops(n: int, seed: int = 0, size: int = 200) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory: pytest.TempPathFactory, save_tiny) -> Path:
    root = tmp_path_factory.mktemp("checkpoints")
    save_tiny(root / "good")
    save_tiny(root / "gray_bundle", shared=False, in_chans=1, age_bins="decades")
    save_tiny(root / "gender_only", tasks=("gender",))
    corrupt = save_tiny(root / "corrupt") / "model.safetensors"
    corrupt.write_bytes(corrupt.read_bytes()[:100])  # truncated weights file
    save_tiny(root / "no_weights")
    (root / "no_weights" / "model.safetensors").unlink()
    save_tiny(root / "bad_config")
    (root / "bad_config" / "config.json").write_text("{not json")
    (root / "not_a_checkpoint").mkdir()  # e.g. a stray folder: ignored, not a failure
    (root / "leaderboard.csv").write_text("model,mae\n")
    return root


@pytest.fixture(scope="module")
def zoo(zoo_root: Path) -> ModelZoo:
    return ModelZoo.load(zoo_root)


def test_broken_checkpoints_are_reported_and_the_rest_load(zoo: ModelZoo) -> None:
    assert sorted(zoo.models) == ["gender_only", "good", "gray_bundle"]
    assert sorted(zoo.failures) == ["bad_config", "corrupt", "no_weights"]
    assert "corrupt or truncated" in zoo.failures["corrupt"]
    assert "no model.safetensors" in zoo.failures["no_weights"]
    assert "not valid JSON" in zoo.failures["bad_config"]
    assert all(not loaded.model.training for loaded in zoo.models.values())


def test_missing_root_gives_an_empty_zoo(tmp_path: Path) -> None:
    zoo = ModelZoo.load(tmp_path / "nowhere")
    assert zoo.models == {} and zoo.failures == {}


def test_predictions_are_distributions(zoo: ModelZoo) -> None:
    crops = random_crops(3)
    results = zoo.predict(crops)
    assert set(results) == set(zoo.models)
    for name, predictions in results.items():
        assert len(predictions) == 3
        for pred in predictions:
            assert pred.model == name
            for probs in (pred.age_probs, pred.age_bin_probs, pred.gender_probs, pred.ethnicity_probs):
                if probs is not None:
                    assert np.all(probs >= 0) and abs(float(probs.sum()) - 1) < 1e-5
            if pred.age is not None:
                assert 0 <= pred.age <= 116
                assert pred.age_probs.shape == (NUM_AGES,)
                assert abs(pred.age - float(np.arange(NUM_AGES) @ pred.age_probs)) < 1e-3


def test_age_bins_follow_each_models_card(zoo: ModelZoo) -> None:
    results = zoo.predict(random_crops(1))
    good, gray = results["good"][0], results["gray_bundle"][0]
    assert good.age_bin_names == UTK7.names and len(good.age_bin_probs) == 7
    assert gray.age_bin_names == get_age_bins("decades").names
    assert np.allclose(gray.age_bin_probs, get_age_bins("decades").bin_probabilities(gray.age_probs))
    assert good.age_bin == UTK7.names[int(np.argmax(good.age_bin_probs))]
    assert good.age_bin_confidence == pytest.approx(float(good.age_bin_probs.max()))


def test_absent_tasks_are_none(zoo: ModelZoo) -> None:
    [pred] = zoo.predict(random_crops(1))["gender_only"]
    assert pred.age is None and pred.age_probs is None and pred.age_bin_probs is None and pred.age_bin is None
    assert pred.ethnicity_probs is None and pred.ethnicity is None and pred.ethnicity_confidence is None
    assert pred.gender in GENDER_NAMES and pred.gender_confidence >= 0.5


def test_batching_does_not_change_results(zoo: ModelZoo) -> None:
    a, b = random_crops(2, seed=3)
    together = zoo.predict([a, b])
    alone = [zoo.predict([a]), zoo.predict([b])]
    for name in zoo.models:
        for i in range(2):
            x, y = together[name][i], alone[i][name][0]
            assert np.allclose(x.gender_probs, y.gender_probs, atol=1e-5)
            if x.age is not None:
                assert x.age == pytest.approx(y.age, abs=1e-3)


def test_matches_the_model_run_by_hand_on_the_face_and_its_mirror(zoo_root: Path, zoo: ModelZoo) -> None:
    from agekit.data.transforms import to_model_input

    crops = random_crops(2, seed=5)
    loaded = zoo.models["good"]
    x = to_model_input(crops_to_batch(crops), loaded.card)
    with torch.no_grad():
        plain, mirrored = loaded.model(x), loaded.model(x.flip(-1))
    averaged = torch.softmax((plain["gender"] + mirrored["gender"]) / 2, -1).numpy()
    assert zoo.flip_average
    assert np.allclose([p.gender_probs for p in zoo.predict(crops)["good"]], averaged, atol=1e-6)
    no_flip = ModelZoo.load(zoo_root, flip_average=False)
    got = [p.gender_probs for p in no_flip.predict(crops)["good"]]
    assert np.allclose(got, torch.softmax(plain["gender"], -1).numpy(), atol=1e-6)
    assert not np.allclose(got, averaged, atol=1e-4)  # the mirror image really changes the answer


def test_flip_average_is_a_no_op_on_a_mirror_symmetric_face(zoo_root: Path, zoo: ModelZoo) -> None:
    half = np.random.default_rng(3).integers(0, 255, (200, 100, 3), dtype=np.uint8)
    symmetric = Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1))
    flipped = zoo.predict([symmetric])["good"][0]
    plain = ModelZoo.load(zoo_root, flip_average=False).predict([symmetric])["good"][0]
    assert np.allclose(flipped.age_probs, plain.age_probs, atol=1e-5)
    assert flipped.age == pytest.approx(plain.age, abs=1e-3)


def test_crops_of_mixed_sizes_and_empty_input(zoo: ModelZoo) -> None:
    crops = random_crops(1) + random_crops(1, size=120) + [Image.new("L", (200, 200), 128)]
    assert all(len(v) == 3 for v in zoo.predict(crops).values())
    assert zoo.predict([]) == {name: [] for name in zoo.models}


def test_channels_last_gives_the_same_predictions(zoo_root: Path, zoo: ModelZoo) -> None:
    nchw = ModelZoo.load(zoo_root, channels_last=False)
    assert zoo.channels_last and not nchw.channels_last
    crops = random_crops(2, seed=7)
    a, b = zoo.predict(crops)["good"], nchw.predict(crops)["good"]
    assert all(np.allclose(x.age_probs, y.age_probs, atol=1e-5) for x, y in zip(a, b))


def test_models_run_at_once_give_the_same_predictions_in_the_same_order(zoo_root: Path, zoo: ModelZoo) -> None:
    parallel = ModelZoo.load(zoo_root, workers=2)
    crops = random_crops(3)
    expected, got = zoo.predict(crops), parallel.predict(crops)
    assert list(got) == list(expected)
    for name, preds in expected.items():
        for mine, theirs in zip(got[name], preds):
            for field in ("age_probs", "gender_probs", "ethnicity_probs"):
                assert (getattr(mine, field) is None) == (getattr(theirs, field) is None)
                if getattr(mine, field) is not None:
                    np.testing.assert_array_equal(getattr(mine, field), getattr(theirs, field))


def test_decode_outputs_from_known_logits() -> None:
    age_logits = torch.full((1, NUM_AGES), -1e4)
    age_logits[0, 30] = 0.0  # all mass on age 30
    logits = {"age": age_logits, "gender": torch.tensor([[0.0, 0.0]]), "ethnicity": torch.zeros(1, 5)}
    [pred] = decode_outputs("m", logits, "utk7")
    assert isinstance(pred, Prediction)
    assert pred.age == pytest.approx(30.0)
    assert pred.age_bin == "15-30" and pred.age_bin_confidence == pytest.approx(1.0)
    assert np.allclose(pred.gender_probs, [0.5, 0.5]) and np.allclose(pred.ethnicity_probs, 0.2)
