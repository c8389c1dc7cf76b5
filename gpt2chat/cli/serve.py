"""``gpt2chat serve``: an OpenAI-compatible chat API and a web page, on :class:`gpt2chat.ChatSession`."""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass, field

from ..chat.flags import decoding_arguments
from . import parse

#: The decoding flags, generated from :class:`~gpt2chat.ChatSettings` (declared there once).
ServeDecodingArguments = decoding_arguments(
    "ServeDecodingArguments",
    exclude=("use_token_type_ids",),
    note="Default, for this and the decoding options below: the settings saved with the model "
    "(generation_config.json and chat_config.json), else the value in brackets. "
    "--max_new_tokens: when a request gives no max_tokens; --temperature (0: greedy) and --top_p: "
    "defaults a request may override; the others hold for every request.",
)
ServeDecodingArguments.server_semantics = True


@dataclass
class ServeArguments(ServeDecodingArguments):
    """Where to listen, what to allow, and the decoding used when a request does not say."""

    model: str = field(
        default=None,
        metadata={
            "help": "Fine-tuned model folder or hub id (a full checkpoint or a PEFT adapter "
            "folder), or a .gguf file."
        },
    )
    host: str = field(
        default="127.0.0.1",
        metadata={"help": "Interface to bind (default: this machine only; 0.0.0.0: all)."},
    )
    port: int = field(default=8000, metadata={"help": "TCP port."})
    model_name: str | None = field(
        default=None,
        metadata={"help": "Model id shown by /v1/models and the page (default: folder name)."},
    )
    max_concurrency: int = field(
        default=2, metadata={"help": "Generations running at once; the others wait in a queue."}
    )
    max_queue: int = field(
        default=256, metadata={"help": "Requests allowed to wait for a slot (beyond: 429)."}
    )
    api_key: str | None = field(
        default=None,
        metadata={
            "help": "Require 'Authorization: Bearer <key>' on /v1/* (default: $GPT2CHAT_API_KEY "
            "when set, else no key)."
        },
    )
    allowed_hosts: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated host names requests may address this server by (the Host "
            "header), e.g. chat.example.com; '*': any. Always allowed: localhost, 127.0.0.1, "
            "::1 and --host unless it is 0.0.0.0 / ::. Others get a 400 (DNS rebinding)."
        },
    )
    max_messages: int = field(default=100, metadata={"help": "Most messages in one request."})
    max_chars: int = field(
        default=32_000, metadata={"help": "Most characters in one request (all messages)."}
    )
    max_tokens_limit: int = field(
        default=512, metadata={"help": "Largest max_tokens a request may ask for."}
    )
    chat_config: bool = field(
        default=True,
        metadata={
            "help": "Use the decoding settings saved with the model as the defaults "
            "(--no_chat_config: the values in brackets)."
        },
    )
    persona: str | None = field(
        default=None,
        metadata={
            "help": "Persona used when a request has no system message (--with_persona models)."
        },
    )
    max_len: int | None = field(
        default=None, metadata={"help": "Context size to fit in (default: the model's)."}
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, ..."})
    dtype: str = field(
        default="auto",
        metadata={"help": "auto (bf16/fp16 on GPU, fp32 on CPU), bfloat16, float16 or float32."},
    )
    log_level: str = field(
        default="info", metadata={"help": "uvicorn log level (warning hides the access log)."}
    )

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("--model is required (a fine-tuned model folder or hub id).")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be between 0 and 65535, got {self.port}.")
        if self.api_key is None:
            self.api_key = os.environ.get("GPT2CHAT_API_KEY") or None
        super().__post_init__()
        self.settings()  # validates the limits and decoding defaults

    def settings(self):
        from ..serve import ServeSettings

        return ServeSettings(
            model_name=self.model_name,
            max_concurrency=self.max_concurrency,
            max_queue=self.max_queue,
            api_key=self.api_key,
            allowed_hosts=self.hosts(),
            max_messages=self.max_messages,
            max_chars=self.max_chars,
            max_tokens_limit=self.max_tokens_limit,
            chat_config=self.chat_config,
            persona=self.persona,
            max_len=self.max_len,
            device=self.device,
            dtype=self.dtype,
            **self.given_decoding(),
        )

    def hosts(self) -> list[str]:
        """The Host names answered: the loopback names, --host (unless a wildcard), and
        --allowed_hosts."""
        from ..serve.guard import LOOPBACK_HOSTS

        names = list(LOOPBACK_HOSTS)
        if self.host not in _WILDCARDS:
            names.append(self.host)
        names += [h.strip() for h in (self.allowed_hosts or "").split(",") if h.strip()]
        return names


_WILDCARDS = ("0.0.0.0", "::", "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(argv: list[str]) -> int:
    import logging

    from ..serve import create_app, serve

    (args,) = parse(
        (ServeArguments,),
        argv,
        "gpt2chat serve",
        "Serve a fine-tuned model over HTTP: an OpenAI-compatible /v1/chat/completions API "
        "(streaming or not) and a web chat page at /.",
    )
    logging.getLogger("transformers").setLevel(logging.ERROR)
    log = logging.getLogger("gpt2chat")
    if not _is_loopback(args.host) and not args.api_key:
        log.warning(
            "Listening on %s without --api_key: anyone who can reach this port can use the model.",
            args.host,
        )
    if args.host in _WILDCARDS and not args.allowed_hosts:
        log.warning(
            "Listening on all interfaces, but only requests addressed to localhost / 127.0.0.1 "
            "are answered: pass --allowed_hosts with the name or address clients use (or '*').",
        )
    try:
        app = create_app(args.model, args.settings())
    except OSError as err:  # not found locally and no hub access
        print(f"gpt2chat serve: error: cannot load {args.model!r}: {err}", file=sys.stderr)
        return 1
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"gpt2chat serve: {app.state.engine.model_name} on http://{shown}:{args.port}/ "
        f"(web chat at /, OpenAI API at /v1; Ctrl-C stops)",
        flush=True,
    )
    serve(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
