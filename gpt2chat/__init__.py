"""gpt2chat: fine-tune GPT-2 (or any causal LM) into a multi-turn chatbot, the Hugging Face way."""

from .collator import DialogueCollator
from .data import available_datasets, load_dialogues, register_dataset
from .features import DatasetStats, dataset_statistics, prepare_dataset
from .render import encode_texts, render_ids, render_messages
from .tokens import SpeakerTokens, add_speaker_tokens, get_speaker_tokens

__version__ = "0.1.0"

__all__ = [
    "DatasetStats",
    "DialogueCollator",
    "SpeakerTokens",
    "__version__",
    "add_speaker_tokens",
    "available_datasets",
    "dataset_statistics",
    "encode_texts",
    "get_speaker_tokens",
    "load_dialogues",
    "prepare_dataset",
    "register_dataset",
    "render_ids",
    "render_messages",
]
