"""evaluation.model_card: the Hugging Face metadata names the datasets a model saw and its test results on each."""

from __future__ import annotations

from agekit.card import ModelCard
from evaluation.model_card import front_matter


def test_front_matter_names_every_training_source_and_its_test_results() -> None:
    card = ModelCard(name="m", family="multitask", architecture="dlib_resnet29", tasks=("age", "gender"),
                     input_size=112)
    utk = {"age_mae": 5.123456, "gender_accuracy": 0.92}
    meta = front_matter(card, utk)
    assert meta["datasets"] == ["UTKFace"] and card.data_sources() == ("UTKFace",)
    [result] = meta["model-index"][0]["results"]
    assert result["dataset"]["type"] == "UTKFace" and result["metrics"][0] == {
        "type": "mae", "name": "age MAE (years)", "value": 5.1235}

    card.train_config = {"sources": [{"pack": "utkface_128.safetensors"}, {"pack": "aaf_128.safetensors"}]}
    meta = front_matter(card, utk, {"age_mae": 5.66, "gender_accuracy": 0.928})
    assert meta["datasets"] == ["UTKFace", "All-Age-Faces"]
    utk_again, aaf_result = meta["model-index"][0]["results"]
    assert utk_again == result
    assert aaf_result["dataset"]["type"] == "All-Age-Faces" and aaf_result["dataset"]["split"] == "test"
    assert [m["value"] for m in aaf_result["metrics"]] == [5.66, 0.928]
