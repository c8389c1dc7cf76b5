"""``gpt2chat chat``: the original recipe's inference script, on :class:`gpt2chat.ChatSession`."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from . import parse


@dataclass
class ChatArguments:
    """The original inference arguments (``--model_path``, ``--seed``, ``--gpu``, ``--max_turns``,
    ``--top_p``, ``--end_command``) plus the decoding options of ``ChatSession``."""

    model_path: str = field(
        default=None,
        metadata={
            "help": "Hub id or local folder of the fine-tuned model (a full checkpoint or a PEFT "
            "adapter folder), or a .gguf file."
        },
    )
    seed: int | None = field(default=0, metadata={"help": "Random seed for sampling."})
    gpu: str = field(
        default="0",
        metadata={"help": "CUDA device index to use when a GPU is available, or 'cpu'."},
    )
    max_turns: int | None = field(
        default=None,
        metadata={
            "help": "Utterances per exchange, the reply included (as in training). Default, for "
            "this and the decoding options below: the model's chat_config.json, else the "
            "value in brackets. [5]"
        },
    )
    top_p: float | None = field(
        default=None, metadata={"help": "Nucleus sampling probability. [0.8]"}
    )
    end_command: str = field(default="Abort!", metadata={"help": "A line that ends the chat."})
    top_k: int | None = field(default=None, metadata={"help": "Top-k sampling (0: off). [0]"})
    temperature: float | None = field(
        default=None, metadata={"help": "Sampling temperature. [1.0]"}
    )
    greedy: bool = field(default=False, metadata={"help": "Greedy decoding instead of sampling."})
    num_beams: int = field(default=1, metadata={"help": "Beam search with this many beams."})
    repetition_penalty: float | None = field(
        default=None,
        metadata={"help": "Penalty (> 1) for tokens already in the context. [off]"},
    )
    no_repeat_ngram_size: int | None = field(
        default=None, metadata={"help": "Never repeat an n-gram of this size."}
    )
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "Longest reply, in tokens. [64]"}
    )
    guidance_scale: float | None = field(
        default=None,
        metadata={
            "help": "Context guidance: contrast the reply's scores given the conversation with "
            "those given none (1: off; 1.2-1.5 for small models; not with --num_beams). [1]"
        },
    )
    num_candidates: int | None = field(
        default=None,
        metadata={
            "help": "Sample this many replies side by side and answer with the one the "
            "conversation explains best (MMI reranking; 1: off; not with --greedy or --num_beams)."
            " The reply then comes whole, not streamed. [1]"
        },
    )
    mmi_weight: float | None = field(
        default=None,
        metadata={
            "help": "With --num_candidates: score = log p(reply | conversation) - mmi_weight * "
            "log p(reply | no conversation). [0.5]"
        },
    )
    chat_config: bool = field(
        default=True,
        metadata={
            "help": "Use the decoding settings saved with the model (chat_config.json) as the "
            "defaults (--no_chat_config: the values in brackets)."
        },
    )
    min_new_tokens: int | None = field(
        default=None, metadata={"help": "Shortest reply, in tokens."}
    )
    persona: str | None = field(
        default=None,
        metadata={"help": "Persona / system text (for models trained with --with_persona)."},
    )
    max_len: int | None = field(
        default=None, metadata={"help": "Context size to fit in (default: the model's)."}
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "auto (bf16/fp16 on GPU, fp32 on CPU), bfloat16, float16 or float32."},
    )
    threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads for torch (default: torch's choice). On a busy shared machine "
            "1 is often fastest."
        },
    )
    cache_implementation: str = field(
        default="dynamic", metadata={"help": "KV cache: dynamic or static."}
    )
    prefix_cache: bool = field(default=True, metadata={"help": "Reuse the KV cache between turns."})
    stream: bool = field(default=True, metadata={"help": "Print replies as they are generated."})
    save_transcript: str | None = field(
        default=None, metadata={"help": "Write the conversation to this JSON file at the end."}
    )
    load_transcript: str | None = field(
        default=None, metadata={"help": "Continue the conversation saved in this JSON file."}
    )

    def __post_init__(self):
        if not self.model_path:
            raise ValueError("--model_path is required (a fine-tuned model folder or hub id).")
        if self.max_turns is not None and self.max_turns < 2:
            raise ValueError(f"--max_turns must be >= 2, got {self.max_turns}.")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"--top_k must be >= 0 (0: off), got {self.top_k}.")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}.")
        if self.num_beams < 1:
            raise ValueError(f"--num_beams must be >= 1, got {self.num_beams}.")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.guidance_scale is not None and not self.guidance_scale >= 0:
            raise ValueError(f"--guidance_scale must be >= 0 (1: off), got {self.guidance_scale}.")
        if self.guidance_scale not in (None, 1) and self.num_beams > 1:
            raise ValueError("--guidance_scale works without beam search: drop --num_beams.")
        if self.num_candidates is not None and not 1 <= self.num_candidates <= 64:
            raise ValueError(
                f"--num_candidates must be between 1 and 64, got {self.num_candidates}."
            )
        if (self.num_candidates or 1) > 1 and (self.greedy or self.num_beams > 1):
            raise ValueError(
                "--num_candidates reranks sampled replies: drop --greedy / --num_beams, or "
                "use --num_candidates 1."
            )
        if self.mmi_weight is not None and not self.mmi_weight >= 0:
            raise ValueError(f"--mmi_weight must be >= 0, got {self.mmi_weight}.")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}.")
        if not self.end_command.strip():
            raise ValueError("--end_command must not be empty.")

    def device(self) -> str:
        import torch

        if self.gpu.lower() == "cpu" or not torch.cuda.is_available():
            return "cpu"
        return f"cuda:{int(self.gpu)}" if self.gpu.isdigit() else self.gpu

    def generation_options(self) -> dict:
        """The ``ChatSession`` options given on the command line (``None``: not given, so the
        model's ``chat_config.json`` or the library default decides)."""
        sampling = not self.greedy and self.num_beams == 1
        options: dict = {
            "max_turns": self.max_turns,
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "guidance_scale": self.guidance_scale,
        }
        if self.greedy or self.num_beams > 1:
            options.update(do_sample=False, num_beams=self.num_beams)
        if sampling:
            options.update(
                top_p=self.top_p,
                top_k=self.top_k,
                temperature=self.temperature,
                num_candidates=self.num_candidates,
                mmi_weight=self.mmi_weight,
            )
        return {k: v for k, v in options.items() if v is not None}


def cmd_chat(argv: list[str]) -> int:
    import logging

    from ..chat.repl import run_repl
    from ..chat.session import ChatSession

    (args,) = parse(
        (ChatArguments,),
        argv,
        "gpt2chat chat",
        "Chat with a fine-tuned model in the terminal (stdin may be a pipe: one turn per line).",
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        session = ChatSession.from_pretrained(
            args.model_path,
            device=args.device(),
            dtype=args.dtype,
            chat_config=args.chat_config,
            persona=args.persona,
            max_len=args.max_len,
            prefix_cache=args.prefix_cache,
            cache_implementation=args.cache_implementation,
            seed=args.seed,
            **args.generation_options(),
        )
    except FileNotFoundError:
        raise  # reported by gpt2chat.cli.main
    except OSError as err:  # not found locally and no hub access
        print(f"gpt2chat chat: error: cannot load {args.model_path!r}: {err}", file=sys.stderr)
        return 1
    if args.load_transcript:
        session.load_transcript(args.load_transcript)
    try:
        status = run_repl(session, end_command=args.end_command, stream=args.stream)
    finally:
        if args.save_transcript:
            path = session.save_transcript(args.save_transcript)
            print(f"(conversation saved to {path})", file=sys.stderr)
    return status
