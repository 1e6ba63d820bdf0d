"""agekit: age, gender and ethnicity estimation from faces — data audit, models, evaluation, explanations."""

__version__ = "0.1.0"
