"""gpt2chat: fine-tune GPT-2 (or any causal LM) into a multi-turn chatbot, the Hugging Face way."""

from .chat import ChatSession, ChatSettings
from .collator import DialogueCollator
from .data import available_datasets, load_dialogues, register_dataset
from .evaluation import EvalReport, evaluate_model
from .extend import add_speaker_tokens
from .features import DatasetStats, dataset_statistics, prepare_dataset
from .render import encode_texts, render_ids, render_messages
from .tokens import SpeakerTokens, get_speaker_tokens

__version__ = "0.1.0"

__all__ = [
    "ChatSession",
    "ChatSettings",
    "DatasetStats",
    "DialogueCollator",
    "DialogueTrainer",
    "DialogueTrainingArguments",
    "EvalReport",
    "LoraArguments",
    "SpeakerTokens",
    "TimeBudgetCallback",
    "__version__",
    "add_speaker_tokens",
    "available_datasets",
    "dataset_statistics",
    "encode_texts",
    "evaluate_model",
    "get_speaker_tokens",
    "load_dialogues",
    "prepare_dataset",
    "register_dataset",
    "render_ids",
    "render_messages",
]

#: Heavy names imported on first use (transformers.Trainer takes seconds to import), so that
#: `import gpt2chat` and the CLI start fast.
_LAZY = {
    "DialogueTrainer": "gpt2chat.training.trainer",
    "DialogueTrainingArguments": "gpt2chat.training.arguments",
    "LoraArguments": "gpt2chat.training.arguments",
    "TimeBudgetCallback": "gpt2chat.training.callbacks",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gpt2chat' has no attribute {name!r}")
