"""DDP on CPU: two processes launched the way torchrun does (RANK / WORLD_SIZE / MASTER_* env), gloo backend."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import json, sys, torch
from agekit.engine import fit
from tests.test_engine import colour_coded_faces, tiny_config

out = sys.argv[1]
config = tiny_config(epochs=3, batch_size=8, frozen_epochs=1, loss_weighting="uncertainty", augment=True)
result = fit(config, colour_coded_faces(64), colour_coded_faces(16, seed=1), out_dir=out + "/run")
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else int(__import__("os").environ["RANK"])
torch.save(result.model.state_dict(), f"{out}/rank{rank}.pt")
with open(f"{out}/rank{rank}.json", "w") as handle:
    json.dump(result.history, handle)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_training_keeps_ranks_identical(tmp_path) -> None:
    port = _free_port()
    processes = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        processes.append(subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path)], cwd=REPO, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for process in processes:
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 0, output

    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0]), "ranks diverged"
    histories = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for key in ("train_loss", "val_loss", "weight_age", "weight_gender"):
        assert [row[key] for row in histories[0]] == [row[key] for row in histories[1]], key
    losses = [row["train_gender_loss"] + row["train_ethnicity_loss"] for row in histories[0]]
    assert losses[-1] < losses[0]
    # 64 images, 2 ranks x 4 batches of 8 per epoch
    assert histories[0][0]["images_per_s"] > 0
    # only rank 0 writes the run folder
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["resume.pt", "training_log.csv"]
