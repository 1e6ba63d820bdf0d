"""Fit every model's 80 % age interval on val, store it in config.json, and evaluate it on the test faces.

    python -m evaluation.intervals [--checkpoints checkpoints] [--names A B ...] [--sources utkface ...]

Per model (a consensus too): each val face set (UTKFace clean and rendered as photos, plus every other source a
builder in `evaluation.model_outputs.FACE_SET_BUILDERS` adds, e.g. AAF) calibrates its own q for both interval
methods, and the method val prefers (`agekit.intervals.choose_interval`) goes into config.json "age_interval" with
its val coverage and width; the served q (photos of unknown source, the app) is the widest source's. Then the test
face sets: eval/predictions.csv and predictions_wild.csv get age_lo, age_hi (each with its source's q), and
metrics.json's test and wild sections get their metrics recomputed from those tables (which adds
metrics["interval"]: coverage and mean width overall, by true age bin and by ethnicity). Only val faces are read
before config.json is written; the test faces are read after, to report.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in evaluation.evaluate; before torch loads

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from agekit.artifacts import (
    TEST_SECTION,
    WILD_SECTION,
    file_sha256,
    read_metrics,
    read_predictions,
    section_of,
    write_predictions,
    write_section,
)
from agekit.card import ModelCard
from agekit.checkpoint import CONFIG_FILE
from agekit.consensus import ConsensusSpec, is_consensus, zoo_folders
from agekit.intervals import CalibrationSource, IntervalChoice, choose_interval, coverage_summary
from agekit.metrics import compute_metrics, predictions_frame
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

SECTION_OF_SOURCE = {CLEAN: TEST_SECTION, RENDERED: WILD_SECTION}  # test face set → metrics.json section
# years: how far recomputed expected ages may be from the committed tables' (the largest gap for clean faces, the
# mean gap for faces in rendered photos: float rounding in MTCNN's landmarks moves a few aligned crops by a pixel
# between runs, measured on the shipped zoo: mean 0.0007-0.0026 years, a few faces up to 0.1); a retrained model
# is off by far more
STALE_TOLERANCE = {TEST_SECTION: 1e-4, WILD_SECTION: 0.01}


def calibration_sources(card: ModelCard, val_sets: Sequence[FaceSetOutputs]) -> list[CalibrationSource]:
    """One calibration source per non-empty val face set: true ages and the model's age distributions."""
    return [CalibrationSource.from_probabilities(s.source, s.split, s.truth["age"], member_outputs(card, s.probs)["age"])
            for s in val_sets if s.files]


def interval_config(choice: IntervalChoice) -> dict[str, Any]:
    """config.json's "age_interval": the chosen rule plus both candidates' val coverage and mean width (all val
    faces, each with its source's q)."""
    return {**choice.chosen.to_dict(), "val_candidates": choice.val}


def fit_model_interval(folder: Path, val_sets: Sequence[FaceSetOutputs]) -> IntervalChoice:
    """Choose and store (config.json, through ModelCard) one model's interval from val face sets only."""
    card = ModelCard.load(folder)
    choice = choose_interval(calibration_sources(card, val_sets))
    card.age_interval = interval_config(choice)
    card.save(folder)
    return choice


def network_names(cards: Sequence[ModelCard]) -> list[str]:
    """The networks whose outputs these zoo members need (a consensus needs its members), each once."""
    names: list[str] = []
    for card in cards:
        for name in ConsensusSpec.from_card(card).members if is_consensus(card) else (card.name,):
            if name not in names:
                names.append(name)
    return names


def face_set_coverage(card: ModelCard, face_sets: Sequence[FaceSetOutputs]) -> dict[str, dict[str, Any]]:
    """Coverage and mean width (years) of the card's interval on each non-empty face set, by source name."""
    rule = card.interval()
    result = {}
    for face_set in face_sets:
        if face_set.files:
            lo, hi = rule.for_source(face_set.source).bounds(member_outputs(card, face_set.probs)["age"])
            result[face_set.source] = coverage_summary(face_set.truth["age"], lo, hi)
    return result


def test_tables(card: ModelCard, test_sets: Sequence[FaceSetOutputs]) -> dict[str, pd.DataFrame]:
    """metrics.json section → predictions table (with age_lo, age_hi) of the test face sets that have one."""
    return {SECTION_OF_SOURCE[s.source]: predictions_frame(s.files, s.truth, member_outputs(card, s.probs),
                                                           card.age_bin_scheme(), card.interval(s.source))
            for s in test_sets if s.source in SECTION_OF_SOURCE and s.files}


def check_not_stale(committed: pd.DataFrame, frame: pd.DataFrame, section: str, where: str) -> None:
    """The recomputed table must be the committed one (same faces, same expected ages) plus the interval."""
    mine = frame.set_index("file")["pred_age"]
    theirs = committed.set_index("file")["pred_age"]
    if set(mine.index) != set(theirs.index):
        raise ValueError(f"{where} holds other faces than this evaluation: re-run `python -m evaluation.run` for it")
    gaps = (mine - theirs.loc[mine.index]).abs()
    if (gaps.mean() if section == WILD_SECTION else gaps.max()) > STALE_TOLERANCE[section]:
        raise ValueError(f"{where} does not hold this model's current predictions: re-run "
                         "`python -m evaluation.run` for it before fitting intervals")


def write_test_intervals(root: Path, card: ModelCard, test_sets: Sequence[FaceSetOutputs]) -> dict[str, Any]:
    """Rewrite the test prediction tables with age_lo/age_hi and their sections' metrics; returns the coverage."""
    folder = Path(root) / card.name
    report = read_metrics(folder)
    coverage = {}
    for section_name, frame in test_tables(card, test_sets).items():
        section = section_of(report, section_name)
        if section is None:
            print(f"  {card.name}: no {section_name} section yet, its interval coverage is not stored")
            continue
        check_not_stale(read_predictions(root, card.name, section_name), frame, section_name,
                        f"{card.name} {section_name}")
        section["metrics"] = compute_metrics(frame, card.age_bin_scheme())
        if "config_sha256" in section.get("model", {}):  # the test section records the config.json it ran with
            section["model"]["config_sha256"] = file_sha256(folder / CONFIG_FILE)
        write_predictions(root, card.name, frame, section_name)
        write_section(folder, section_name, section)
        interval = section["metrics"]["interval"]
        coverage[section_name] = {key: interval[key] for key in ("n", "coverage", "mean_width")}
    return coverage


def zoo_cards(root: Path, names: Sequence[str] | None) -> list[ModelCard]:
    """The named zoo members' cards (default: every network and consensus under root)."""
    folders = {p.name: p for p in zoo_folders(root)}
    unknown = [n for n in names or [] if n not in folders]
    if unknown:
        raise ValueError(f"no checkpoint named {unknown} under {root}; available: {sorted(folders)}")
    return [ModelCard.load(folders[n]) for n in (names or sorted(folders))]


def calibrate_intervals(root: Path, face_sets: FaceSetSource, names: Sequence[str] | None = None, write: bool = True,
                        cache_dir: Path | None = CACHE_DIR) -> tuple[dict[str, IntervalChoice], list[FaceSetOutputs]]:
    """Val only: fit the named models' intervals (and store them in config.json when `write`); returns the choices
    and the val outputs. face_sets: split → face sets (only "val" is asked for). Run before the test evaluation so
    that its tables carry the intervals."""
    cards = zoo_cards(root, names)
    networks = network_names(cards)
    print(f"val faces for {len(networks)} networks")
    val_sets = collect_outputs(root, networks, face_sets("val"), cache_dir=cache_dir)
    if write:
        return {card.name: fit_model_interval(Path(root) / card.name, val_sets) for card in cards}, val_sets
    return {card.name: choose_interval(calibration_sources(card, val_sets)) for card in cards}, val_sets


def fit_intervals(root: Path, face_sets: FaceSetSource, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The whole command: calibrate on val, then add the intervals to the committed test tables and sections;
    one summary row per model (val and test coverage and width per face set)."""
    choices, val_sets = calibrate_intervals(root, face_sets, names)
    cards = [ModelCard.load(Path(root) / name) for name in choices]  # with their new intervals
    networks = network_names(cards)
    print(f"test faces for {len(networks)} networks")
    test_sets = collect_outputs(root, networks, face_sets("test"))
    rows = []
    for card in cards:
        choice = choices[card.name]
        rows.append({"model": card.name, "method": choice.chosen.method, "q": choice.chosen.q,
                     "val_candidates": choice.val, "val": face_set_coverage(card, val_sets),
                     "test": face_set_coverage(card, test_sets)})
        write_test_intervals(root, card, test_sets)
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """One markdown line per model: method, q, val and test coverage / mean width per face set."""
    header = ("| model | method | q | val scaled cov / width | val constant cov / width | val per source | "
              "test per source |")
    lines = [header, "| --- |" + " --- |" * 6]

    def cell(summary: dict[str, Any] | None) -> str:
        return "–" if not summary else f"{summary['coverage']:.1%} / {summary['mean_width']:.1f} y (n {summary['n']})"

    for row in rows:
        cand = row["val_candidates"]
        val, test = ("; ".join(f"{name} {cell(s)}" for name, s in row[part].items()) for part in ("val", "test"))
        lines.append(f"| {row['model']} | {row['method']} | {row['q']:.3f} | "
                     f"{cand['scaled']['coverage']:.1%} / {cand['scaled']['mean_width']:.1f} y | "
                     f"{cand['constant']['coverage']:.1%} / {cand['constant']['mean_width']:.1f} y | {val} | {test} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.intervals", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--names", nargs="+", default=None, help="models (default: every network and consensus)")
    parser.add_argument("--sources", nargs="+", default=["utkface"], help="face sources for val and test")
    parser.add_argument("--data", default=None, help="UTKFace folder (default: $AGEKIT_UTKFACE)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        rows = fit_intervals(args.checkpoints, source_face_sets(args.sources, args.data), args.names)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_rows(rows))
    print(f"\ntotal wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

