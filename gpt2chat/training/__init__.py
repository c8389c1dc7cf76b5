"""Training: argument dataclasses, model loading, :class:`DialogueTrainer`, the model card."""

from .arguments import DataArguments, DialogueTrainingArguments, LoraArguments, ModelArguments
from .callbacks import TimeBudgetCallback
from .export import export_model
from .model_card import ModelCardInfo, render_model_card
from .run import TrainingSummary, run_training
from .trainer import DialogueTrainer

__all__ = [
    "DataArguments",
    "DialogueTrainer",
    "DialogueTrainingArguments",
    "LoraArguments",
    "ModelArguments",
    "ModelCardInfo",
    "TimeBudgetCallback",
    "TrainingSummary",
    "export_model",
    "render_model_card",
    "run_training",
]
