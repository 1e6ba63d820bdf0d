"""Evaluation: `python -m evaluation.run` runs every step in order (evaluation/run.py lists them) and writes
checkpoints/<model>/eval/, the model cards and checkpoints/leaderboard.csv through `agekit.artifacts`.

The steps' computations live beside it (evaluate: clean test; wild: faces in rendered photos; bin_decision;
model_card; significance; report); flip_ablation is an experiment of its own. Nothing is imported here, so
`python -m evaluation.run` runs without a double import.
"""
