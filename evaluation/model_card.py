"""A checkpoint's Hugging Face model card (checkpoints/<model>/README.md), written from its artifacts.

`evaluation.run`'s "model_card" step writes it from the ModelCard (config.json), training_log.csv and
metrics.json, and `--check` regenerates and compares it, so the card's numbers cannot drift from the evaluation.
It holds no timing: a card must come out the same on any machine.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import yaml

from agekit.artifacts import VAL_SECTION, WILD_SECTION, aaf_headline, section_of
from agekit.card import ModelCard

REPOSITORY = "agekit"
HEADLINE_ROWS = (  # (metrics.json headline key, model-index metric type, label, is a share)
    ("age_mae", "mae", "age MAE (years)", False),
    ("age_cs5", "accuracy", "age CS@5 (share within 5 years)", True),
    ("age_bin_macro_f1", "f1", "7-bin age macro-F1", True),
    ("gender_accuracy", "accuracy", "gender accuracy", True),
    ("ethnicity_accuracy", "accuracy", "ethnicity accuracy", True),
    ("ethnicity_macro_f1", "f1", "ethnicity macro-F1", True),
)
FAIRNESS_COLUMNS = (("age_mae", "age MAE", False), ("gender_accuracy", "gender acc.", True),
                    ("ethnicity_accuracy", "ethnicity acc.", True))


def _value(value: float | None, share: bool) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{value:.1%}" if share else f"{value:.2f}"


def front_matter(card: ModelCard, headline: dict[str, Any], aaf: dict[str, Any] | None = None) -> dict[str, Any]:
    """The YAML metadata: licence, datasets, tags and the test metrics (UTKFace, and All-Age-Faces' real photos
    when `aaf` holds its test headline) as a model-index."""
    def metrics(values: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"type": kind, "name": label, "value": round(float(values[key]), 4)}
                for key, kind, label, _ in HEADLINE_ROWS if values.get(key) is not None]

    task = {"type": "image-classification", "name": "age, gender and ethnicity from a face"}
    results = [{"task": task, "dataset": {"type": "UTKFace", "name": "UTKFace, agekit grouped split (test)",
                                         "split": "test"}, "metrics": metrics(headline)}]
    if aaf:
        results.append({"task": task, "dataset": {"type": "All-Age-Faces", "split": "test",
                                                  "name": "All-Age-Faces, agekit grouped split (test, real photos)"},
                        "metrics": metrics(aaf)})
    return {
        "license": "other",
        "license_name": "utkface-non-commercial-research",
        "license_link": "https://susanqq.github.io/UTKFace/",
        "library_name": "pytorch",
        "pipeline_tag": "image-classification",
        "datasets": list(card.data_sources()),
        "tags": [REPOSITORY, "age-estimation", "gender-classification", "ethnicity-classification", "face",
                 card.family, card.architecture, "safetensors"],
        "model-index": [{"name": card.name, "results": results}],
    }


def fairness_table(report: dict[str, Any]) -> list[str]:
    """Markdown rows: the test metrics per gender and per ethnicity group."""
    lines = ["| group | faces | " + " | ".join(label for _, label, _ in FAIRNESS_COLUMNS) + " |",
             "| --- | ---: |" + " ---: |" * len(FAIRNESS_COLUMNS)]
    for attribute, slices in (report["metrics"].get("fairness") or {}).items():
        for group in slices.get("groups", []):
            cells = " | ".join(_value(group.get(key), share) for key, _, share in FAIRNESS_COLUMNS)
            lines.append(f"| {attribute}: {group['group']} | {group['count']:,} | {cells} |")
    return lines


def model_card_text(card: ModelCard, report: dict[str, Any], log: pd.DataFrame) -> str:
    """The whole README.md of a checkpoint folder."""
    headline = report["metrics"]["headline"]
    model, data = report["model"], report["data"]
    shape = "one network per task" if not card.shared_backbone else "one network shared by the tasks"
    train = card.train_config
    result = train.get("result") or {}
    lines = [
        "---", yaml.safe_dump(front_matter(card, headline, aaf_headline(report)), sort_keys=False, allow_unicode=True).rstrip(), "---", "",
        f"# {card.name}", "",
        (f"Predicts **{', '.join(card.tasks)}** from an aligned face crop: `{card.architecture}` ({shape}, "
        f"{model['params']:,} parameters, {model['flops'] / 1e6:.1f} MFLOPs per face at {card.input_size} px"
        f"{', grayscale' if card.in_chans == 1 else ''}), family *{card.family}*. Part of {REPOSITORY}, a research demo "
        "comparing models trained from scratch, fine-tuned and multitask; load it with "
        "`agekit.checkpoint.load_checkpoint(folder)` (weights in `model.safetensors`, architecture and preprocessing "
        "in `config.json`)."), "",
    ]
    if card.description:
        lines += [card.description, ""]
    lines += [
        ("Age is predicted as a distribution over 0-116 years: the expected age is the answer, and its 7-bin answer "
        f"(`{card.age_bins}`) uses a prior correction chosen on the validation split. Every face is averaged with its "
        "mirror image."), "",
        "## Training", "",
        (f"Trained on the train split of UTKFace's committed grouped split (manifest sha256 `{card.split_hash[:12]}…`: "
        "duplicate groups never cross splits), the epoch kept by the validation split. Initial weights: "
        f"{card.init_source}."), "",
        (f"{len(log)} epochs run{' (stopped early)' if result.get('stopped_early') else ''}, "
        f"{log['seconds'].sum() / 60:.0f} min on CPU; optimiser {train.get('optimizer', '?')}, learning rate "
        f"{train.get('lr', '?')}, batch {train.get('batch_size', '?')}, {train.get('scheduler', '?')} schedule."), "",
        "## Evaluation", "",
        (f"Test split: {data['n_evaluated']:,} faces never used for training or choices, decoded from UTKFace's "
        f"{data['decode_size']} px JPEGs."), "",
        "| metric | test |", "| --- | ---: |",
        *(f"| {label} | {_value(headline.get(key), share)} |" for key, _, label, share in HEADLINE_ROWS
          if headline.get(key) is not None),
        "",
    ]
    wild = section_of(report, WILD_SECTION)
    if wild and wild.get("metrics"):
        wild_headline = wild["metrics"]["headline"]
        lines += [
            (f"**In photos.** The same test faces rendered as photos (40-400 px wide, tilted, blurred, JPEG-compressed) "
            f"and found by the app's MTCNN detector ({wild['detection_rate']:.1%} detected): age MAE "
            f"{_value(wild_headline.get('age_mae'), False)} years, gender accuracy "
            f"{_value(wild_headline.get('gender_accuracy'), True)}, ethnicity accuracy "
            f"{_value(wild_headline.get('ethnicity_accuracy'), True)}."), "",
        ]
    val = section_of(report, VAL_SECTION)
    if val and val.get("clean") and val.get("wild"):
        lines += [
            (f"**Validation** (what the app ranks models by): age MAE {_value(val['clean'].get('age_mae'), False)} on "
            f"clean faces, {_value(val['wild'].get('age_mae'), False)} in photos."), "",
        ]
    lines += [
        "## Fairness slices (test split)", "",
        *fairness_table(report), "",
        "## Limits", "",
        ("- A research and teaching model, not for decisions about people: its age is off by the MAE above on "
        "average, more in real photos, and gender (two classes) and ethnicity (UTKFace's five coarse groups) are "
        "the dataset authors' labels, not identities."),
        ("- The errors differ by group (table above); UTKFace holds few faces aged 66 and over and few of \"Others\" "
        "(about 7 % each)."),
        ("- **Licence:** trained on UTKFace, which is for non-commercial research only; the same restriction "
        "applies to these weights."),
        "",
    ]
    return "\n".join(lines)
