"""Fit the consensus model on val and evaluate it on test like any model.

    python -m evaluation.consensus [--checkpoints checkpoints] [--name consensus] [--candidates A B ...]
                                   [--sources utkface ...]

1. every candidate network's outputs on the val face sets (UTKFace clean and rendered as photos, plus every source
   `evaluation.model_outputs.FACE_SET_BUILDERS` adds, e.g. AAF), cached under runs/outputs/;
2. members and weights: greedy forward selection with replacement, for the age on the mean over val face sets of
   the age MAE, for gender and ethnicity each on the mean over the val face sets labelled for it of the log loss
   (`agekit.consensus.select_members`);
3. its bin-aware decision on the clean UTKFace val faces (`evaluation.bin_decision.decide`, as for every network);
4. its 80 % age interval on the val face sets (`evaluation.intervals.fit_model_interval`)
   → checkpoints/<name>/config.json (no weights file);
5. only then the test face sets: metrics.json test section + eval/predictions.csv, wild section +
   predictions_wild.csv, and the val section (clean and rendered val headline metrics, what the app ranks by),
   all from the members' outputs.

Re-run it whenever a member is retrained: it re-selects, re-decides and re-evaluates in one go.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in evaluation.evaluate; before torch loads

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from agekit.artifacts import (
    TEST_SECTION,
    VAL_SECTION,
    WILD_SECTION,
    leaderboard_frame,
    metrics_path,
    read_metrics,
    section_of,
    write_leaderboard,
    write_predictions,
    write_section,
)
from agekit.card import ModelCard
from agekit.checkpoint import list_checkpoints
from agekit.consensus import (
    CONSENSUS,
    ClassSelectionSource,
    MemberSelection,
    SelectionSource,
    consensus_card,
    describe_weights,
    select_members,
    zoo_folders,
)
from agekit.data import load_manifest
from agekit.intervals import IntervalChoice, choose_interval, expected_ages
from agekit.labels import CLASS_NAMES, TASKS, get_age_bins
from agekit.metrics import compute_metrics, headline_metrics, predictions_frame
from agekit.predict import FLIP_AVERAGE
from evaluation import bin_decision
from evaluation.intervals import calibration_sources, interval_config
from evaluation.model_outputs import (
    CACHE_DIR,
    CLEAN,
    RENDERED,
    FaceSetOutputs,
    FaceSetSource,
    collect_outputs,
    member_outputs,
    source_face_sets,
)


@dataclass
class ConsensusFit:
    """What was chosen on val: the card written to config.json, the selection, bin decision and interval."""

    card: ModelCard
    selection: MemberSelection
    decision: bin_decision.BinDecision
    interval: IntervalChoice


def selection_sources(val_sets: Sequence[FaceSetOutputs]) -> list[SelectionSource]:
    """Each val face set's true ages and every candidate's expected ages, for `select_members`."""
    return [SelectionSource(s.source, s.split, s.truth["age"].astype(float),
                            {name: expected_ages(probs["age"]) for name, probs in s.probs.items()})
            for s in val_sets if s.files]


def class_selection_sources(val_sets: Sequence[FaceSetOutputs]) -> list[ClassSelectionSource]:
    """For each val face set and class task it has labels for (AAF has no ethnicity), the labelled faces' classes
    and every candidate's probabilities, for `select_members`."""
    sources = []
    for s in val_sets:
        for task in CLASS_NAMES:
            if task in s.truth and s.files:
                known = np.flatnonzero(s.truth[task] >= 0)
                sources.append(ClassSelectionSource(s.source, s.split, task, s.truth[task][known].astype(int),
                                                    {name: probs[task][known] for name, probs in s.probs.items()}))
    return sources


def fit_consensus(root: Path, name: str, val_sets: Sequence[FaceSetOutputs], train_ages: Any) -> ConsensusFit:
    """Choose members, bin decision and interval on the val face sets (nothing is written; see write_card)."""
    selection = select_members(selection_sources(val_sets), class_selection_sources(val_sets))
    members = [ModelCard.load(Path(root) / member) for member in selection.spec.members]
    card = consensus_card(name, selection.spec, members)
    clean = next(s for s in val_sets if s.source == CLEAN)
    bins = get_age_bins(card.age_bins)
    decision = bin_decision.decide(name, member_outputs(card, clean.probs)["age"], clean.truth["age"], bins,
                                   bin_decision.bin_shares(train_ages, bins))
    card.age_bin_log_offsets = tuple(round(v, 6) for v in decision.log_offsets)
    interval = choose_interval(calibration_sources(card, val_sets))
    card.age_interval = interval_config(interval)
    return ConsensusFit(card, selection, decision, interval)


def write_card(root: Path, card: ModelCard) -> Path:
    """checkpoints/<name>/config.json of a consensus (the folder is created; there is no weights file)."""
    folder = Path(root) / card.name
    folder.mkdir(parents=True, exist_ok=True)
    return card.save(folder)


def member_sum(reports: Sequence[dict[str, Any]], section: str, key: str) -> float:
    """Sum of one number over the members' metrics.json sections (params, flops, latency: they all run)."""
    return sum(report[section][key] for report in reports)


def test_section(card: ModelCard, frame: pd.DataFrame, member_reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The consensus' test section: metrics of its table; size and latency are the members' sums (all run)."""
    first = member_reports[0]
    return {
        "format_version": 1,
        "model": {
            "name": card.name, "family": card.family, "architecture": card.architecture, "tasks": list(card.tasks),
            "shared_backbone": card.shared_backbone, "input_size": card.input_size, "in_chans": card.in_chans,
            "init_source": card.init_source, "age_bins": card.age_bin_scheme().spec,
            "params": int(member_sum(member_reports, "model", "params")),
            "flops": int(member_sum(member_reports, "model", "flops")),
            "config_sha256": hashlib.sha256((card.to_json() + "\n").encode()).hexdigest(),  # as card.save writes it
            "members": card.architecture_kwargs["members"], "weights": card.architecture_kwargs["weights"],
        },
        "data": {**first["data"], "checkpoint_split_hash": card.split_hash,
                 "hash_match": card.split_hash == first["data"]["manifest_hash"]},
        "inference": {"flip_average": FLIP_AVERAGE},
        "metrics": compute_metrics(frame, card.age_bin_scheme()),
        # the members' measured batch-1 latencies added up: the consensus runs them all, then one average
        "speed": {"latency_ms": member_sum(member_reports, "speed", "latency_ms"), "latency_of": "sum of members"},
    }


@dataclass
class ConsensusResults:
    """The consensus' evaluation as metrics.json sections and prediction tables (by section name)."""

    sections: dict[str, dict[str, Any]]
    tables: dict[str, pd.DataFrame]


def evaluate_consensus(root: Path, card: ModelCard, val_sets: Sequence[FaceSetOutputs],
                       test_sets: Sequence[FaceSetOutputs]) -> ConsensusResults:
    """The consensus' test, wild and val sections and its test prediction tables, from its members' outputs (the
    members' metrics.json give size, latency, test provenance and the detection summary, shared by all models)."""
    reports = [read_metrics(Path(root) / member) for member in card.architecture_kwargs["members"]]
    bins = card.age_bin_scheme()

    def table(face_set: FaceSetOutputs) -> pd.DataFrame:
        return predictions_frame(face_set.files, face_set.truth, member_outputs(card, face_set.probs), bins,
                                 card.interval(face_set.source))

    sets = {(s.split, s.source): s for s in [*test_sets, *val_sets]}
    clean, rendered = table(sets["test", CLEAN]), table(sets["test", RENDERED])
    results = ConsensusResults({TEST_SECTION: test_section(card, clean, reports)}, {TEST_SECTION: clean})
    member_wild = section_of(reports[0], WILD_SECTION)
    if member_wild is not None:
        detected = clean[clean["file"].isin(set(rendered["file"]))]
        results.sections[WILD_SECTION] = {
            **{key: value for key, value in member_wild.items() if key not in ("detect_s", "predict_s")},
            "metrics": compute_metrics(rendered, bins), "clean_same_faces": headline_metrics(detected)}
        results.tables[WILD_SECTION] = rendered
    member_val = section_of(reports[0], VAL_SECTION)
    results.sections[VAL_SECTION] = {
        "clean": headline_metrics(table(sets["val", CLEAN])), "wild": headline_metrics(table(sets["val", RENDERED])),
        "detection_rate": member_val["detection_rate"] if member_val else None}
    return results


def write_results(root: Path, name: str, results: ConsensusResults) -> None:
    """The sections into checkpoints/<name>/eval/metrics.json, the prediction tables beside it, and the
    leaderboard of every evaluated network and consensus under root."""
    for section, content in results.sections.items():
        write_section(Path(root) / name, section, content)
    for section, frame in results.tables.items():
        write_predictions(root, name, frame, section)
    write_leaderboard(root, leaderboard_frame(read_metrics(f) for f in zoo_folders(root) if metrics_path(f).is_file()))


def candidate_networks(root: Path, names: Sequence[str] | None) -> list[str]:
    """The networks the consensus may choose from (default: every checkpoint with weights under root that predicts
    age, gender and ethnicity)."""
    available = [p.name for p in list_checkpoints(root) if set(ModelCard.load(p).tasks) == set(TASKS)]
    unknown = [n for n in names or [] if n not in available]
    if unknown:
        raise ValueError(f"no network named {unknown} under {root}; available: {available}")
    return list(names or available)


def run_consensus(root: Path, face_sets: FaceSetSource, train_ages: np.ndarray, name: str = CONSENSUS,
                  candidates: Sequence[str] | None = None, cache_dir: Path | None = CACHE_DIR
                  ) -> tuple[ConsensusFit, ConsensusResults]:
    """Fit on val (steps 1-4 of the module docstring), then evaluate on test (step 5); nothing is written.
    face_sets: split → face sets; train_ages: the training faces' ages (years), for the bin decision's prior."""
    networks = candidate_networks(root, candidates)
    print(f"val outputs of {len(networks)} candidate networks")
    val_sets = collect_outputs(root, networks, face_sets("val"), cache_dir=cache_dir)
    fit = fit_consensus(root, name, val_sets, train_ages)
    print(f"test outputs of the {len(fit.selection.spec.members)} members")
    test_sets = collect_outputs(root, fit.selection.spec.members, face_sets("test"), cache_dir=cache_dir)
    return fit, evaluate_consensus(root, fit.card, val_sets, test_sets)


def summary(fit: ConsensusFit, results: ConsensusResults) -> str:
    """What was chosen on val and what it scores on test, as text."""
    spec, selection = fit.selection.spec, fit.selection
    decision = fit.decision
    lines = [
        "members (val-chosen): " + describe_weights(spec),
        "greedy steps, age: " + " → ".join(f"+{m} {score:.3f}" for m, score in selection.steps),
        *(f"greedy steps, {task} (log loss): " + " → ".join(f"+{m} {score:.4f}" for m, score in steps)
          for task, steps in selection.task_steps.items()),
        (f"val objective (mean of val age MAE over face sets): {selection.objective:.3f} years; "
         f"best single {selection.single_best[0]} {selection.single_best[1]:.3f}"),
        (f"bin decision tau {decision.tau:.1f} (val 7-bin macro-F1 {decision.f1_by_tau[decision.tau]:.1%}, "
         f"plain argmax {decision.f1_by_tau[0.0]:.1%})"),
        f"interval: {fit.interval.chosen.method}, q {fit.interval.chosen.q:.3f}; val {fit.interval.val}",
    ]
    for section, content in results.sections.items():
        metrics = content.get("metrics") or {}
        parts = {"": metrics["headline"]} if metrics else {k: content[k] for k in ("clean", "wild") if content.get(k)}
        for part, headline in parts.items():
            lines.append(f"{section} {part}: MAE {headline['age_mae']:.3f}, 7-bin macro-F1 "
                         f"{headline['age_bin_macro_f1']:.1%}, gender {headline['gender_accuracy']:.1%}, "
                         f"ethnicity {headline['ethnicity_accuracy']:.1%}")
        if "interval" in metrics:
            lines.append(f"{section} interval: coverage {metrics['interval']['coverage']:.1%}, "
                         f"mean width {metrics['interval']['mean_width']:.2f} years")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.consensus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--name", default=CONSENSUS, help="folder name of the consensus under --checkpoints")
    parser.add_argument("--candidates", nargs="+", default=None, help="networks it may choose (default: all)")
    parser.add_argument("--sources", nargs="+", default=["utkface"], help="face sources for val and test")
    parser.add_argument("--data", default=None, help="UTKFace folder (default: $AGEKIT_UTKFACE)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        train_ages = load_manifest(None).rows("train")["age"].to_numpy()
        fit, results = run_consensus(args.checkpoints, source_face_sets(args.sources, args.data), train_ages,
                                     args.name, args.candidates)
        write_card(args.checkpoints, fit.card)
        write_results(args.checkpoints, fit.card.name, results)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(fit, results))
    print(f"\ntotal wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
