"""The whole evaluation of the checkpoints in one command, its steps in order.

    python -m evaluation.run [--checkpoints checkpoints] [--data $AGEKIT_UTKFACE] [--models A B ...]
    python -m evaluation.run --check --models pretrained_onet [--sample 64]

Steps (STEPS, in this order; `--steps` runs a subset, still in this order):
  bin_decision  the 7-bin prior correction chosen on val           → config.json age_bin_log_offsets
  intervals     80 % age interval calibrated per val source         → config.json age_interval
  test          clean test faces                                   → metrics.json "test", eval/predictions.csv
  wild_test     test faces rendered as photos, the app's detector  → metrics.json "wild", predictions_wild.csv
  val_ranking   clean and wild val metrics: the app's ranking      → metrics.json "val"
  consensus     members, weights, decision, interval chosen on val; → checkpoints/consensus/ config.json and
                evaluated from the members' outputs (all models)     eval/ (test, wild, val sections, tables)
  aaf           All-Age-Faces val and test (real photos, the pack) → metrics.json "aaf_val", "aaf_test",
                                                                     eval/predictions_aaf.csv
  leaderboard   every evaluated model                              → checkpoints/leaderboard.csv
  model_card    the Hugging Face model card                        → checkpoints/<model>/README.md
  significance  bootstrap intervals and paired differences         (printed)
  report        the README's tables                                (printed)

A step reuses what an earlier one computed in the same run: the decoded faces, every model's clean probabilities
(the bin decision does not change them), the detector's crops (cached in runs/wild/ across runs). Each writes only
its own files through `agekit.artifacts`, so a step can be run again alone without losing another's result.

--check recomputes the named models' steps and compares each result with the committed file instead of writing
it. A number agrees when |committed - recomputed| <= tolerance x max(1, |committed|): CHECK_TOLERANCE (1e-4) for
clean faces, where only float32 rounding differs between machines and thread counts (measured on pretrained_onet:
1.3e-5 years at most); WILD_TOLERANCE (2e-2) for faces in rendered photos, where the same rounding in MTCNN's
landmarks moves a few aligned crops by a pixel (measured: probabilities by up to 1.6e-3, a face's age by 0.021
years, a val rate by one face, a reliability bin by two faces; every detection and test decision the same).
Everything else must be equal, the list of missed faces too; timings (metrics.json "speed", "detect_s",
"predict_s", the leaderboard's latency_ms) are not compared. It exits 1 naming every file and field that differs, and writes no file (only the ignored
detection cache under runs/wild/). With --sample N it recomputes the first N faces of each split and compares
their prediction rows only (a quick check that the committed predictions still come out of the code); the steps
that need whole splits are then skipped.

To add a step: write `def my_step(run: PipelineRun) -> None` that computes its result from `run` (faces, models,
`run.clean_probabilities`, ...) and hands it to `run.store` (put_section, put_predictions, ...), then append
`Step("my_step", my_step, ...)` to STEPS (or insert it where its inputs are ready).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in training: passive OpenMP waits; before torch loads

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from agekit.artifacts import (
    AAF_TEST_SECTION,
    AAF_VAL_SECTION,
    TEST_SECTION,
    VAL_SECTION,
    WILD_SECTION,
    ArtifactError,
    leaderboard_frame,
    leaderboard_path,
    metrics_path,
    model_card_path,
    predictions_path,
    read_leaderboard,
    read_metrics,
    read_model_card,
    read_predictions,
    section_of,
    with_section,
    write_leaderboard,
    write_model_card,
    write_predictions,
    write_section,
)
from agekit.card import ModelCard
from agekit.checkpoint import LoadedModel
from agekit.consensus import consensus_folders
from agekit.data import FaceTensors, SplitManifest, load_folder, load_manifest, load_pack, resolve_data_root
from agekit.data.aaf import aaf_pack_path
from agekit.faces import ALIGN_FACES, FaceDetector
from agekit.labels import get_age_bins
from agekit.metrics import compute_metrics, predictions_frame
from agekit.training_log import read_log
from evaluation import bin_decision, consensus, intervals, model_outputs, wild
from evaluation.evaluate import (
    DECODE_SIZE,
    EvaluationError,
    clean_provenance,
    clean_section,
    load_selected,
    predict_probabilities,
    select_checkpoints,
    summary_line,
    summary_table,
)
from evaluation.model_card import model_card_text
from evaluation.report import report_tables
from evaluation.significance import significance_tables

CHECK_TOLERANCE = 1e-4  # relative (at least absolute): clean faces, bin offsets
WILD_TOLERANCE = 2e-2  # relative (at least absolute): anything measured on faces in rendered photos
TIMING_KEYS = frozenset({"speed", "detect_s", "predict_s", "latency_ms"})  # measured, never compared


@dataclass
class RunOptions:
    """What to evaluate and how (the command-line flags)."""

    checkpoints: Path = Path("checkpoints")  # folder holding one sub-folder per model
    data: str | None = None  # UTKFace folder; None: environment variable AGEKIT_UTKFACE
    pack: str | None = None  # read the test faces from this face pack instead of the folder (the GPU machine)
    models: list[str] | None = None  # sub-folder names; None: every checkpoint found
    manifest: str | None = None  # split manifest CSV; None: the committed one
    steps: list[str] | None = None  # step names; None: all of STEPS
    check: bool = False  # compare with the committed files instead of writing them
    sample: int | None = None  # --check only: the first N faces of each split, prediction rows only
    batch_size: int = 64
    threads: int = 2  # torch CPU threads for inference, detection and the latency measurement
    device: str = "cpu"  # where the test predictions run; latency is always measured on the CPU
    latency_runs: int = 30  # timed batch-1 forward passes (median reported)
    latency_warmup: int = 5
    seed: int = 0  # wild rendering seed (each face is seeded by it and its index)
    cache_dir: Path | None = wild.CACHE_DIR  # detection crops; None: no cache


# ---------------------------------------------------------------- where results go: files, or a comparison

def close(committed: float, recomputed: float, wild: bool) -> bool:
    """Whether two numbers agree within the tolerance of their kind (see the module docstring)."""
    tolerance = WILD_TOLERANCE if wild else CHECK_TOLERANCE
    return abs(committed - recomputed) <= tolerance * max(1.0, abs(committed))


def differences(committed: Any, recomputed: Any, where: str, wild: bool = False) -> list[str]:
    """Where two JSON-like values differ: numbers beyond their tolerance (WILD_TOLERANCE under a key naming
    "wild", or everywhere when `wild`), anything else at all; keys in TIMING_KEYS are skipped."""
    if isinstance(committed, dict) and isinstance(recomputed, dict):
        found = []
        for key in dict.fromkeys([*committed, *recomputed]):
            if key in TIMING_KEYS:
                continue
            if key not in committed or key not in recomputed:
                found.append(f"{where}.{key}: {'missing in the committed file' if key not in committed else 'not recomputed'}")
            else:
                found += differences(committed[key], recomputed[key], f"{where}.{key}", wild or "wild" in key)
        return found
    if isinstance(committed, list) and isinstance(recomputed, list):
        if len(committed) != len(recomputed):
            return [f"{where}: {len(committed)} committed items, {len(recomputed)} recomputed"]
        return [d for i, (a, b) in enumerate(zip(committed, recomputed))
                for d in differences(a, b, f"{where}[{i}]", wild)]
    numbers = (int, float)
    if (isinstance(committed, numbers) and isinstance(recomputed, numbers)
            and not isinstance(committed, bool) and not isinstance(recomputed, bool)):
        same = (math.isnan(committed) and math.isnan(recomputed)) or close(committed, recomputed, wild)
        return [] if same else [f"{where}: committed {committed!r}, recomputed {recomputed!r}"]
    return [] if committed == recomputed else [f"{where}: committed {committed!r}, recomputed {recomputed!r}"]


def table_differences(committed: pd.DataFrame, recomputed: pd.DataFrame, key: str, where: str,
                      wild: bool = False) -> list[str]:
    """Rows of `recomputed` (matched by `key`) against the committed table, column by column (WILD_TOLERANCE
    for every column when `wild`, else for the columns named wild_*)."""
    columns = [c for c in recomputed.columns if c not in TIMING_KEYS]
    missing_columns = [c for c in columns if c not in committed.columns]
    if missing_columns:
        return [f"{where}: columns {missing_columns} are not in the committed file"]
    indexed = committed.set_index(key)
    absent = [k for k in recomputed[key] if k not in indexed.index]
    if absent:
        return [f"{where}: {len(absent)} rows not in the committed file, first {absent[0]!r}"]
    found = []
    mine = recomputed.set_index(key)
    theirs = indexed.loc[mine.index]
    for column in columns:
        if column == key:
            continue
        a, b = theirs[column], mine[column]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            a, b = a.astype(float), b.astype(float)
            tolerance = WILD_TOLERANCE if wild or column.startswith("wild") else CHECK_TOLERANCE
            bad = ~(((a - b).abs() <= tolerance * np.maximum(1.0, a.abs())) | (a.isna() & b.isna()))
        else:  # an empty cell reads back as NaN whatever was written (None for a step that had no data)
            bad = (a.astype(str) != b.astype(str)) & ~(a.isna() & b.isna())
        if bad.any():
            row = bad.to_numpy().nonzero()[0][0]
            found.append(f"{where} [{mine.index[row]}].{column}: committed {a.iloc[row]!r}, recomputed {b.iloc[row]!r}"
                         + (f" ({int(bad.sum())} rows differ)" if bad.sum() > 1 else ""))
    return found


class ArtifactStore:
    """Where the steps hand their results: the artifact files, or (check) a comparison with them.

    It also keeps every model's metrics.json as this run sees it (the committed file with this run's sections),
    so later steps (leaderboard, model card) build on what earlier ones computed, also under --check.
    """

    def __init__(self, root: Path, check: bool = False, rows_only: bool = False) -> None:
        self.root, self.check, self.rows_only = Path(root), check, rows_only
        self.differences: list[str] = []
        self.compared: list[str] = []  # what --check compared, "file: what"
        self._reports: dict[str, dict[str, Any]] = {}

    def report(self, model: str) -> dict[str, Any]:
        """metrics.json of `model` as it stands in this run ({} before any evaluation)."""
        if model not in self._reports:
            folder = self.root / model
            self._reports[model] = read_metrics(folder) if metrics_path(folder).is_file() else {}
        return self._reports[model]

    def _compare(self, where: str, found: list[str]) -> None:
        self.compared.append(where)
        self.differences += found

    def put_section(self, model: str, name: str, section: dict[str, Any]) -> None:
        committed = section_of(self.report(model), name)
        self._reports[model] = with_section(self.report(model), name, section)
        where = f"{self.root / model / 'eval' / 'metrics.json'} {name}"
        if not self.check:
            write_section(self.root / model, name, section)
        elif not self.rows_only:
            self._compare(where, [f"{where}: not committed"] if committed is None
                          else differences(committed, section, where, wild=name == WILD_SECTION))

    def put_predictions(self, model: str, frame: pd.DataFrame, section: str) -> None:
        if not self.check:
            write_predictions(self.root, model, frame, section)
            return
        where = str(predictions_path(self.root, model, section))
        try:
            committed = read_predictions(self.root, model, section)
        except ArtifactError as err:
            self._compare(where, [str(err)])
            return
        if not self.rows_only and len(committed) != len(frame):
            self._compare(where, [f"{where}: {len(committed)} committed rows, {len(frame)} recomputed"])
        self._compare(where, table_differences(committed, frame, "file", where, wild=section == WILD_SECTION))

    def put_bin_offsets(self, folder: Path, offsets: tuple[float, ...]) -> None:
        """The bin decision, stored in config.json (agekit.card owns that file)."""
        card = ModelCard.load(folder)
        if not self.check:
            card.age_bin_log_offsets = offsets
            card.save(folder)
        elif not self.rows_only:
            where = f"{folder / 'config.json'} age_bin_log_offsets"
            self._compare(where, differences(list(card.age_bin_log_offsets), list(offsets), where))

    def put_card(self, folder: Path, card: ModelCard) -> None:
        """A whole config.json (a consensus's, or a card with a new age interval); agekit.card owns the file."""
        if not self.check:
            folder.mkdir(parents=True, exist_ok=True)
            card.save(folder)
        elif not self.rows_only:
            where = str(folder / "config.json")
            try:
                committed = json.loads(ModelCard.load(folder).to_json())
            except (FileNotFoundError, ValueError) as err:
                self._compare(where, [f"{where}: {err}"])
                return
            self._compare(where, differences(committed, json.loads(card.to_json()), where))

    def put_leaderboard(self, board: pd.DataFrame, models: Sequence[str]) -> None:
        if not self.check:
            write_leaderboard(self.root, board)
        elif not self.rows_only:
            where = str(leaderboard_path(self.root))
            try:
                committed = read_leaderboard(self.root)
            except ArtifactError as err:
                self._compare(where, [str(err)])
                return
            found = [f"{where}: names {list(committed['name'])} committed, {list(board['name'])} recomputed"]
            if list(committed["name"]) == list(board["name"]):
                found = table_differences(committed, board[board["name"].isin(models)], "name", where)
            self._compare(where, found)

    def put_model_card(self, folder: Path, text: str) -> None:
        if not self.check:
            write_model_card(folder, text)
        elif not self.rows_only:
            where = str(model_card_path(folder))
            try:
                committed = read_model_card(folder)
            except ArtifactError as err:
                self._compare(where, [str(err)])
                return
            lines = [(i + 1, a, b) for i, (a, b) in enumerate(zip(committed.splitlines(), text.splitlines())) if a != b]
            found = [f"{where} line {lines[0][0]}: committed {lines[0][1]!r}, generated {lines[0][2]!r}"] if lines else []
            if not found and committed != text:
                found = [f"{where}: committed {len(committed)} characters, generated {len(text)}"]
            self._compare(where, found)


# ---------------------------------------------------------------- one run of the pipeline

@dataclass
class PipelineRun:
    """What the steps share: options, the loaded models, decoded faces, probabilities, crops, the store."""

    options: RunOptions
    manifest: SplitManifest
    models: list[LoadedModel]
    store: ArtifactStore
    _faces: dict[str, FaceTensors] = field(default_factory=dict)
    _probabilities: dict[tuple[str, str], tuple[dict[str, np.ndarray], float]] = field(default_factory=dict)
    _crops: dict[str, wild.WildCrops] = field(default_factory=dict)
    _detector: FaceDetector | None = None

    @property
    def root(self) -> Path:
        return Path(self.options.checkpoints)

    def faces(self, split: str) -> FaceTensors:
        """The split's faces, decoded once (test: from --pack when given), the first --sample of them."""
        if split not in self._faces:
            started = time.perf_counter()
            if split == "test" and self.options.pack:
                source: Any = self.options.pack
                faces = load_pack(self.options.pack, split, expected_manifest_hash=self.manifest.hash)
            else:
                source = resolve_data_root(self.options.data)
                faces = load_folder(source, self.manifest, split, DECODE_SIZE)
            if len(faces) == 0:
                raise EvaluationError(f"none of the {split} files could be read from {source}: "
                                      f"first problems {faces.skipped[:3]}")
            if self.options.sample:
                faces = faces.subset(slice(0, self.options.sample))
            print(f"{split}: {len(faces)} faces from {source} in {time.perf_counter() - started:.1f} s"
                  + (f"; skipped {len(faces.skipped)} unreadable" if faces.skipped else ""))
            self._faces[split] = faces
        return self._faces[split]

    def clean_probabilities(self, loaded: LoadedModel, split: str) -> tuple[dict[str, np.ndarray], float]:
        """A model's flip-averaged probabilities on the split's faces and the seconds they took, computed once
        per run (the bin decision changes only how they are read, not them)."""
        key = (loaded.card.name, split)
        if key not in self._probabilities:
            started = time.perf_counter()
            device = self.options.device if split == "test" else "cpu"
            probabilities = predict_probabilities(loaded, self.faces(split).images, self.options.batch_size,
                                                  device=device)
            self._probabilities[key] = probabilities, time.perf_counter() - started
        return self._probabilities[key]

    @property
    def detector(self) -> FaceDetector:
        """The app's face detector, created on first use."""
        self._detector = self._detector or FaceDetector()
        return self._detector

    @property
    def outputs_cache(self) -> Path | None:
        """Where the intervals and consensus steps cache network outputs (none with --no-cache)."""
        return None if self.options.cache_dir is None else model_outputs.CACHE_DIR

    def crops(self, split: str) -> wild.WildCrops:
        """The split's faces rendered as photos and detected (aligned crops), once per run and cached on disk."""
        if split not in self._crops:
            cache = None if self.options.sample else self.options.cache_dir  # a sample must not replace the cache
            crops = wild.load_or_detect(self.faces(split), self.detector, split, self.options.seed, ALIGN_FACES,
                                        cache)
            summary = wild.detection_summary(crops)
            print(f"{split} in photos: detected {summary['n_detected']} of {summary['n_faces']} faces "
                  f"({summary['detection_rate']:.1%}); detection {crops.seconds:.0f} s")
            self._crops[split] = crops
        return self._crops[split]


# ---------------------------------------------------------------- the steps

def bin_decision_step(run: PipelineRun) -> None:
    """Choose each model's 7-bin prior correction on val; later steps of this run use it."""
    train_ages = run.manifest.rows("train")["age"].to_numpy()
    faces = run.faces("val")
    decisions = []
    for loaded in run.models:
        if "age" not in loaded.card.tasks:
            continue
        bins = get_age_bins(loaded.card.age_bins)
        shares = bin_decision.bin_shares(train_ages, bins)
        probabilities, _ = run.clean_probabilities(loaded, "val")
        decision = bin_decision.decide(loaded.card.name, probabilities["age"], faces.age.numpy(), bins, shares)
        loaded.card.age_bin_log_offsets = decision.log_offsets
        run.store.put_bin_offsets(loaded.folder, decision.log_offsets)
        decisions.append(decision)
    print(bin_decision.decision_table(decisions, len(faces)))


def test_step(run: PipelineRun) -> None:
    """Every metric on the clean test faces."""
    faces = run.faces("test")
    provenance = clean_provenance(run.manifest, faces, run.options.pack)
    for loaded in run.models:
        probabilities, predict_s = run.clean_probabilities(loaded, "test")
        section, frame = clean_section(loaded, faces, probabilities, predict_s, provenance, run.options.threads,
                                      run.options.latency_runs, run.options.latency_warmup)
        run.store.put_section(loaded.card.name, TEST_SECTION, section)
        run.store.put_predictions(loaded.card.name, frame, TEST_SECTION)
        print(f"{loaded.card.name}: {summary_line(section)}")


def wild_split_step(run: PipelineRun, split: str) -> None:
    """The split's faces in rendered photos through the app's detector: the wild section (test) or the val
    section (val) of every model, and the clean → wild table."""
    faces, crops = run.faces(split), run.crops(split)
    rows = []
    for loaded in run.models:
        probabilities, _ = run.clean_probabilities(loaded, split)
        section, frame, clean = wild.wild_section(loaded, faces, probabilities, crops, split, run.options.seed,
                                                  ALIGN_FACES, run.options.batch_size)
        if split == "test":
            run.store.put_section(loaded.card.name, WILD_SECTION, section)
            run.store.put_predictions(loaded.card.name, frame, WILD_SECTION)
        else:
            run.store.put_section(loaded.card.name, VAL_SECTION, wild.val_section(clean, section))
        rows.append(wild.comparison_rows(loaded.card.name, clean, section))
    print(f"{split} split, clean → wild\n" + wild.format_table(pd.DataFrame(rows)))


def wild_test_step(run: PipelineRun) -> None:
    wild_split_step(run, "test")


def val_ranking_step(run: PipelineRun) -> None:
    wild_split_step(run, "val")


def face_sets(run: PipelineRun, split: str) -> list[model_outputs.FaceSet]:
    """The split's faces the intervals and the consensus are fitted (val) and evaluated (test) on: UTKFace clean and
    in rendered photos (this run's decoded faces and detector crops), plus AAF when its pack has been built."""
    faces, crops = run.faces(split), run.crops(split)
    sets = model_outputs.utkface_sets(faces, crops, split, wild.cache_key(split, run.options.seed,
                                                                          faces.manifest_hash, run.detector))
    if aaf_pack_path().is_file():
        sets += model_outputs.aaf_face_sets(split)
    return sets


def intervals_step(run: PipelineRun) -> None:
    """Each model's 80 % age interval calibrated on each val face set, clean, in rendered photos and AAF (split
    conformal, evaluation.intervals); the later steps' tables and metrics carry it."""
    names = [m.card.name for m in run.models if "age" in m.card.tasks]
    choices, _ = intervals.calibrate_intervals(run.root, partial(face_sets, run), names, write=False,
                                               cache_dir=run.outputs_cache)
    for loaded in run.models:
        if loaded.card.name in choices:
            loaded.card.age_interval = intervals.interval_config(choices[loaded.card.name])
            run.store.put_card(loaded.folder, loaded.card)
            chosen = choices[loaded.card.name].chosen
            print(f"{loaded.card.name}: {chosen.method} interval, q {chosen.q:.3f}")


def consensus_step(run: PipelineRun) -> None:
    """The consensus of every network: chosen and calibrated on val, evaluated from the members' test outputs."""
    if run.options.models:
        print("consensus: not refitted (it chooses among every network: run without --models)")
        return
    train_ages = run.manifest.rows("train")["age"].to_numpy()
    fit, results = consensus.run_consensus(run.root, partial(face_sets, run), train_ages,
                                           cache_dir=run.outputs_cache)
    run.store.put_card(run.root / fit.card.name, fit.card)
    for name, section in results.sections.items():
        run.store.put_section(fit.card.name, name, section)
    for name, frame in results.tables.items():
        run.store.put_predictions(fit.card.name, frame, name)
    print(consensus.summary(fit, results))


def aaf_step(run: PipelineRun) -> None:
    """Every model (and, without --models, the consensus) on All-Age-Faces' real photos as the app crops them (the
    AAF pack): val → metrics.json "aaf_val" (a ranking source), test → "aaf_test" and predictions_aaf.csv. Age and
    gender only: AAF has no ethnicity label. Skipped, saying so, when the pack has not been built."""
    if not aaf_pack_path().is_file():
        print(f"aaf: skipped, no All-Age-Faces pack at {aaf_pack_path()} (python -m agekit.data aaf-pack)")
        return
    cards = [m.card for m in run.models]
    if not run.options.models:
        cards += [ModelCard.load(folder) for folder in consensus_folders(run.root)]
    networks = intervals.network_names(cards)
    for split, section in (("val", AAF_VAL_SECTION), ("test", AAF_TEST_SECTION)):
        [face_set] = model_outputs.aaf_face_sets(split)
        [outputs] = model_outputs.collect_outputs(run.root, networks, [face_set], cache_dir=run.outputs_cache)
        for card in cards:
            probs = {task: p for task, p in model_outputs.member_outputs(card, outputs.probs).items()
                     if task in outputs.truth}
            frame = predictions_frame(outputs.files, outputs.truth, probs, card.age_bin_scheme(),
                                      card.interval(outputs.source))
            metrics = compute_metrics(frame, card.age_bin_scheme())
            if split == "val":
                run.store.put_section(card.name, section, {"n": metrics["n"], **metrics["headline"]})
                continue
            run.store.put_section(card.name, section, {"data": {"source": "All-Age-Faces", "split": split,
                                                                **face_set.provenance},
                                                       "metrics": metrics})
            run.store.put_predictions(card.name, frame, section)
            print(f"{card.name}: All-Age-Faces test " + ", ".join(f"{key}={value:.3f}" for key, value in
                                                                   metrics["headline"].items() if value is not None))


def leaderboard_step(run: PipelineRun) -> None:
    """The leaderboard of every checkpoint under the folder (consensuses too), this run's models as just computed."""
    names = ({folder.name for folder in [*select_checkpoints(run.root), *consensus_folders(run.root)]}
             | {m.card.name for m in run.models})
    board = leaderboard_frame(run.store.report(name) for name in sorted(names))
    run.store.put_leaderboard(board, [m.card.name for m in run.models])
    print(summary_table(board))


def model_card_step(run: PipelineRun) -> None:
    """checkpoints/<model>/README.md from the card, the training log and metrics.json."""
    for loaded in run.models:
        report = run.store.report(loaded.card.name)
        if section_of(report, TEST_SECTION) is None:
            print(f"{loaded.card.name}: no test evaluation, no model card")
            continue
        run.store.put_model_card(loaded.folder, model_card_text(loaded.card, report, read_log(loaded.folder)))


def significance_step(run: PipelineRun) -> None:
    print(significance_tables(run.root))


def report_step(run: PipelineRun) -> None:
    print(report_tables(run.root))


@dataclass(frozen=True)
class Step:
    """One step of the evaluation: a name, what it does to a PipelineRun, and what it needs."""

    name: str
    run: Callable[[PipelineRun], None]
    whole_split: bool = False  # its result depends on every face of a split: skipped with --sample
    writes: bool = True  # False: prints from the committed files (skipped with --check)


STEPS: list[Step] = [
    Step("bin_decision", bin_decision_step, whole_split=True),
    Step("intervals", intervals_step, whole_split=True),
    Step("test", test_step),
    Step("wild_test", wild_test_step),
    Step("val_ranking", val_ranking_step),
    Step("consensus", consensus_step, whole_split=True),
    Step("aaf", aaf_step, whole_split=True),
    Step("leaderboard", leaderboard_step, whole_split=True),
    Step("model_card", model_card_step, whole_split=True),
    Step("significance", significance_step, writes=False),
    Step("report", report_step, writes=False),
]


def selected_steps(options: RunOptions) -> list[Step]:
    """The steps this run runs, in pipeline order."""
    known = {step.name for step in STEPS}
    unknown = [name for name in options.steps or [] if name not in known]
    if unknown:
        raise EvaluationError(f"unknown steps {unknown}; the pipeline's steps are {[s.name for s in STEPS]}")
    steps = [step for step in STEPS if not options.steps or step.name in options.steps]
    if options.check:
        steps = [step for step in steps if step.writes and not (options.sample and step.whole_split)]
    return steps


def run_pipeline(options: RunOptions, detector: FaceDetector | None = None) -> PipelineRun:
    """Run the selected steps in order; under --check, `run.store.differences` lists what differs. `detector`:
    the face detector of the wild steps (default: the app's FaceDetector, built when first needed)."""
    if options.sample and not options.check:
        raise EvaluationError("--sample only goes with --check: metrics of a sample must not replace committed ones")
    steps = selected_steps(options)
    manifest = load_manifest(options.manifest)
    models = load_selected(select_checkpoints(options.checkpoints, options.models), manifest, allow_mismatch=False)
    run = PipelineRun(options, manifest, models, ArtifactStore(options.checkpoints, options.check,
                                                              rows_only=bool(options.sample)), _detector=detector)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        for step in steps:
            started = time.perf_counter()
            print(f"\n== {step.name}")
            step.run(run)
            print(f"== {step.name}: {time.perf_counter() - started:.1f} s")
    finally:
        torch.set_num_threads(previous_threads)
    return run


def parse_args(argv: Sequence[str] | None = None) -> RunOptions:
    parser = argparse.ArgumentParser(prog="python -m evaluation.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="folder of checkpoint folders")
    parser.add_argument("--data", default=None, help="UTKFace folder (default: $AGEKIT_UTKFACE)")
    parser.add_argument("--pack", default=None, help="read the test faces from this face pack instead of the folder")
    parser.add_argument("--models", nargs="+", default=None, help="checkpoint names (default: all)")
    parser.add_argument("--manifest", default=None, help="split manifest CSV (default: the committed one)")
    parser.add_argument("--steps", nargs="+", default=None, help=f"run only these of {[s.name for s in STEPS]}")
    parser.add_argument("--check", action="store_true",
                        help=f"recompute and compare with the committed files (relative tolerance {CHECK_TOLERANCE:g}, "
                             f"{WILD_TOLERANCE:g} for faces in photos), write nothing; exit 1 naming what differs")
    parser.add_argument("--sample", type=int, default=None,
                        help="with --check: only the first N faces of each split, their prediction rows")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for inference and detection")
    parser.add_argument("--latency-runs", type=int, default=30, help="timed batch-1 runs (median reported)")
    parser.add_argument("--no-cache", action="store_true", help=f"do not read or write crops under {wild.CACHE_DIR}/")
    args = parser.parse_args(argv)
    return RunOptions(checkpoints=args.checkpoints, data=args.data, pack=args.pack, models=args.models,
                      manifest=args.manifest, steps=args.steps, check=args.check, sample=args.sample,
                      batch_size=args.batch_size, threads=args.threads, latency_runs=args.latency_runs,
                      cache_dir=None if args.no_cache else wild.CACHE_DIR)


def main(argv: Sequence[str] | None = None, detector: FaceDetector | None = None) -> int:
    options = parse_args(argv)
    started = time.perf_counter()
    try:
        run = run_pipeline(options, detector)
    except (ValueError, FileNotFoundError) as err:  # EvaluationError, ArtifactError, DataRootError, ...
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\ntotal wall time {time.perf_counter() - started:.1f} s")
    if not options.check:
        return 0
    if run.store.differences:
        print(f"check FAILED: {len(run.store.differences)} differences (numbers compared within {CHECK_TOLERANCE:g} "
              f"of their size, {WILD_TOLERANCE:g} for faces in photos):", file=sys.stderr)
        for line in run.store.differences:
            print(f"  {line}", file=sys.stderr)
        if any("faces_sha256" in line for line in run.store.differences):
            print("The AAF pack holds other crops than the committed AAF results came from (data.faces_sha256): it "
                  "was built by another version of the face path, so every AAF number moves with it. Rebuild the "
                  "pack with the committed code (python -m agekit.data aaf-pack) or evaluate again without --check.",
                  file=sys.stderr)
        return 1
    print(f"check passed: {len(run.store.compared)} committed results recomputed and equal within "
          f"{CHECK_TOLERANCE:g} of their size ({WILD_TOLERANCE:g} for faces in photos): "
          f"{', '.join(sorted({Path(w.split(' ')[0]).name for w in run.store.compared}))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
