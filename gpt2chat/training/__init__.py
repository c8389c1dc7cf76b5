"""Training: argument dataclasses (and, later, the trainer)."""

from .arguments import DataArguments, ModelArguments

__all__ = ["DataArguments", "ModelArguments"]
