"""Evaluation CLI: `python -m evaluation.evaluate` writes checkpoints/<model>/eval/ artifacts and the leaderboard.

The API lives in `evaluation.evaluate` (EvalOptions, evaluate_checkpoints, write_leaderboard, read_metrics,
read_leaderboard); it is not imported here so `python -m evaluation.evaluate` runs without a double import.
"""
