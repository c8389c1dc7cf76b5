"""``gpt2chat chat``: the original recipe's inference script, on :class:`gpt2chat.ChatSession`."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from ..chat.flags import decoding_arguments
from . import parse

#: The decoding flags, generated from :class:`~gpt2chat.ChatSettings` (declared there once).
ChatDecodingArguments = decoding_arguments(
    "ChatDecodingArguments",
    note="Default, for this and the decoding options below: the settings saved with the model "
    "(generation_config.json and chat_config.json), else the value in brackets.",
)


@dataclass
class ChatArguments(ChatDecodingArguments):
    """The original inference arguments (``--model_path``, ``--seed``, ``--gpu``, ``--max_turns``,
    ``--top_p``, ``--end_command``) plus the decoding options of ``ChatSession`` (those of
    :class:`~gpt2chat.ChatSettings`, generated from it, and generate's beam and n-gram
    options)."""

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
    end_command: str = field(default="Abort!", metadata={"help": "A line that ends the chat."})
    greedy: bool = field(
        default=False, metadata={"help": "Greedy decoding instead of sampling (--do_sample false)."}
    )
    num_beams: int = field(default=1, metadata={"help": "Beam search with this many beams."})
    no_repeat_ngram_size: int | None = field(
        default=None, metadata={"help": "Never repeat an n-gram of this size."}
    )
    chat_config: bool = field(
        default=True,
        metadata={
            "help": "Use the decoding settings saved with the model as the defaults "
            "(--no_chat_config: the values in brackets; the token-type record holds either way)."
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
        super().__post_init__()  # the decoding values, by ChatSettings' rules
        if self.greedy:
            if self.do_sample:
                raise ValueError("--greedy and --do_sample true contradict: drop one.")
            self.do_sample = False
        if self.num_beams < 1:
            raise ValueError(f"--num_beams must be >= 1, got {self.num_beams}.")
        if self.guidance_scale not in (None, 1) and self.num_beams > 1:
            raise ValueError("--guidance_scale works without beam search: drop --num_beams.")
        if (self.num_candidates or 1) > 1 and (self.do_sample is False or self.num_beams > 1):
            raise ValueError(
                "--num_candidates reranks sampled replies: drop --greedy / --num_beams, or "
                "use --num_candidates 1."
            )
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
        """The ``ChatSession`` options given on the command line (not given: the settings
        saved with the model, or the library default, decide)."""
        options = self.given_decoding()
        if self.num_beams > 1:
            options.update(do_sample=False, num_beams=self.num_beams)
        if options.get("do_sample") is False:  # sampling-only values would contradict it
            for key in ("temperature", "top_p", "top_k", "num_candidates", "mmi_weight"):
                options.pop(key, None)
        extra = {
            "min_new_tokens": self.min_new_tokens,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
        }
        options.update({k: v for k, v in extra.items() if v is not None})
        return options


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
