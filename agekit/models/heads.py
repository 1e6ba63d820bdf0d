"""Task heads (dropout + linear) and the age decoding helpers shared by losses, evaluation and serving."""

from __future__ import annotations

import torch
from torch import nn

from agekit.labels import AGE_MIN, NUM_AGES


class TaskHead(nn.Module):
    """Dropout then one linear layer: feature vector (B, feature_dim) → logits (B, num_outputs)."""

    def __init__(self, feature_dim: int, num_outputs: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(feature_dim, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))


def age_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax of age-head logits (B, 117) → probability of each integer age 0..116 (rows sum to 1)."""
    return torch.softmax(logits.float(), dim=-1)


def age_values(device: torch.device | str | None = None) -> torch.Tensor:
    """The 117 integer ages the age head predicts over, as float years (AGE_MIN..AGE_MAX)."""
    return torch.arange(AGE_MIN, AGE_MIN + NUM_AGES, dtype=torch.float32, device=device)


def expected_age(probs: torch.Tensor) -> torch.Tensor:
    """Expected age in years (B,) of an age distribution (B, 117)."""
    return probs.float() @ age_values(probs.device)
