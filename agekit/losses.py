"""Training losses: label-distribution learning for age, cross-entropy for gender/ethnicity, task weighting.

Age (DLDL-v2, Gao et al. 2018): the target is a Gaussian over the 117 integer ages centred on the true age
(sigma years); loss = KL(target || softmax(logits)) + l1_weight * |expected age − true age| (years).
Gender / ethnicity: cross-entropy with optional label smoothing and class weights.
Weighting: "fixed" sums task losses times fixed weights (DEFAULT_TASK_WEIGHTS); "uncertainty" (Kendall, Gal &
Cipolla 2018) learns one log-variance s_t per task and minimises Σ exp(−s_t)·L_t + s_t (s_t starts at log L_t).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from agekit.labels import TASKS, check_tasks
from agekit.models.heads import age_probabilities, age_values, expected_age

__all__ = [
    "AgeDistributionLoss",
    "MultiTaskLoss",
    "age_probabilities",
    "expected_age",
    "gaussian_age_targets",
]

# The age loss is in year-sized units (≈ 5-10 at convergence, dominated by the L1 term) while cross-entropies are
# ≈ 0.3-1, so "fixed" weighting scales age by 0.1 to keep a shared backbone from serving age alone.
# (For a bundle of independent nets the weights are irrelevant: Adam is invariant to a loss's scale.)
DEFAULT_TASK_WEIGHTS: dict[str, float] = {"age": 0.1, "gender": 1.0, "ethnicity": 1.0}


def gaussian_age_targets(ages: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """(B,) integer ages in years → (B, 117) Gaussian label distributions (each row sums to 1, peak at the age)."""
    if sigma <= 0:
        raise ValueError(f"age_sigma must be positive (years), got {sigma}")
    grid = age_values(ages.device)
    logits = -0.5 * ((grid.unsqueeze(0) - ages.float().unsqueeze(1)) / sigma) ** 2
    return torch.softmax(logits, dim=1)  # normalising over 0..116 truncates the tails at the range ends


class AgeDistributionLoss(nn.Module):
    """DLDL-v2 age loss: KL(Gaussian target ‖ predicted distribution) + l1_weight · mean |E[age] − age| (years)."""

    def __init__(self, sigma: float = 2.0, l1_weight: float = 1.0) -> None:
        super().__init__()
        self.sigma, self.l1_weight = sigma, l1_weight

    def forward(self, logits: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        log_probs = torch.log_softmax(logits.float(), dim=1)
        target = gaussian_age_targets(ages, self.sigma)
        kl = F.kl_div(log_probs, target, reduction="batchmean")
        l1 = (expected_age(log_probs.exp()) - ages.float()).abs().mean()
        return kl + self.l1_weight * l1


class MultiTaskLoss(nn.Module):
    """Per-task losses and their weighted sum.

    forward(logits: {task: (B,K)}, targets: {task: (B,) int64}) → (total scalar, {task: unweighted loss}).
    With weighting="uncertainty" the module owns learnable log-variances (`log_vars`) — optimise its
    parameters together with the model's.
    """

    def __init__(self, tasks: tuple[str, ...] | list[str] = TASKS, weighting: str = "fixed",
                 task_weights: Mapping[str, float] | None = None, age_sigma: float = 2.0,
                 age_l1_weight: float = 1.0, label_smoothing: float = 0.0,
                 class_weights: Mapping[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        if weighting not in ("fixed", "uncertainty"):
            raise ValueError(f"loss weighting {weighting!r} is not 'fixed' or 'uncertainty'")
        self.tasks = check_tasks(tasks)
        self.weighting = weighting
        weights = {**DEFAULT_TASK_WEIGHTS, **(task_weights or {})}
        self.task_weights = {task: float(weights[task]) for task in self.tasks}
        self.age_loss = AgeDistributionLoss(age_sigma, age_l1_weight)
        self.label_smoothing = label_smoothing
        for task, weight in (class_weights or {}).items():
            self.register_buffer(f"class_weight_{task}", weight.float())
        if weighting == "uncertainty":
            self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))
            # s_t starts at log L_t of the first training batch (the optimum of exp(-s)L + s for that L),
            # so every task starts with weighted loss 1 instead of waiting thousands of steps for s to get there.
            self.register_buffer("log_vars_initialised", torch.tensor(False))

    def task_loss(self, task: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Unweighted loss of one task (mean over the batch). Class labels < 0 (unknown, e.g. an All-Age-Faces
        face's ethnicity) are left out; a batch without any known label gives 0 (with a gradient graph)."""
        if task == "age":
            return self.age_loss(logits, target)
        known = target >= 0
        if not bool(known.all()):
            if not bool(known.any()):
                return logits.float().sum() * 0.0
            logits, target = logits[known], target[known]
        return F.cross_entropy(logits.float(), target, weight=getattr(self, f"class_weight_{task}", None),
                               label_smoothing=self.label_smoothing)

    def forward(self, logits: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = {task: self.task_loss(task, logits[task], targets[task]) for task in self.tasks}
        if self.weighting == "uncertainty":
            if self.training and not self.log_vars_initialised:
                self._initialise_log_vars(losses)
            total = sum(torch.exp(-s) * losses[t] + s for t, s in zip(self.tasks, self.log_vars))
        else:
            total = sum(self.task_weights[t] * losses[t] for t in self.tasks)
        return total, {task: loss.detach() for task, loss in losses.items()}

    @torch.no_grad()
    def _initialise_log_vars(self, losses: Mapping[str, torch.Tensor]) -> None:
        start = torch.stack([losses[t].detach().float().clamp_min(1e-6).log() for t in self.tasks])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(start)  # every rank must start from the same weights
            start /= torch.distributed.get_world_size()
        self.log_vars.copy_(start)
        self.log_vars_initialised.fill_(True)

    def current_weights(self) -> dict[str, float]:
        """The weight each task loss gets now (exp(−s_t) under uncertainty weighting)."""
        if self.weighting == "uncertainty":
            return {t: float(torch.exp(-s)) for t, s in zip(self.tasks, self.log_vars.detach())}
        return dict(self.task_weights)
