"""``gpt2chat export``: write a plain Hugging Face model folder: a LoRA adapter merged into its
base model, or any loadable model (a GGUF file, a checkpoint) re-saved with its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import parse


@dataclass
class ExportArguments:
    model: str = field(
        default=None,
        metadata={
            "help": "A LoRA adapter folder (from `gpt2chat train --use_peft`), a model folder, a "
            "Hub id or a .gguf file. Also --model_path.",
            "aliases": ["--model_path"],
        },
    )
    output_dir: str = field(default=None, metadata={"help": "Where the plain model is written."})
    torch_dtype: str | None = field(
        default=None,
        metadata={
            "help": "Save the weights as float32, bfloat16 or float16 (default: as loaded).",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )

    def __post_init__(self):
        if not self.model:
            raise ValueError("--model is required: the adapter or model folder to export.")
        if not self.output_dir:
            raise ValueError("--output_dir is required: where to write the merged model.")


def cmd_export(argv: list[str]) -> int:
    from ..training.export import export_model

    (args,) = parse(
        (ExportArguments,),
        argv,
        "gpt2chat export",
        "Merge a LoRA adapter into its base model (or re-save any model) as a plain Hugging Face "
        "folder that AutoModelForCausalLM and AutoTokenizer load without gpt2chat.",
    )
    out = export_model(args.model, args.output_dir, torch_dtype=args.torch_dtype)
    print(f"Plain model written to {out}\nChat with it: gpt2chat chat --model_path {out}")
    return 0
