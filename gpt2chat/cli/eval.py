"""``gpt2chat eval``: perplexity per dataset and overall, and F1 / BLEU / distinct-n on generated
replies; a table on screen and a JSON file."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import parse


@dataclass
class EvalArguments:
    """The model to evaluate and how replies are generated."""

    model: str = field(
        default=None,
        metadata={
            "help": "The model to evaluate: a folder written by `gpt2chat train` (a full model or "
            "a LoRA adapter), a Hub id, or a .gguf file. Also --model_path.",
            "aliases": ["--model_path"],
        },
    )
    split: str | None = field(
        default=None,
        metadata={"help": "validation or test (default: --eval_split, i.e. validation)."},
    )
    batch_size: int = field(default=8, metadata={"help": "Batch size (per process)."})
    num_samples: int = field(
        default=100,
        metadata={
            "help": "Contexts per dataset whose replies are generated for F1 / BLEU / distinct "
            "(0: perplexity only)."
        },
    )
    max_new_tokens: int = field(default=40, metadata={"help": "Longest generated reply."})
    do_sample: bool = field(
        default=False,
        metadata={"help": "Sample (top-p) instead of greedy decoding (greedy is reproducible)."},
    )
    top_p: float = field(default=0.8, metadata={"help": "Nucleus probability with --do_sample."})
    temperature: float = field(default=1.0, metadata={"help": "Temperature with --do_sample."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampled contexts and decoding."})
    torch_dtype: str | None = field(
        default=None,
        metadata={
            "help": "Load the weights as float32, bfloat16, float16 or auto (default).",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )
    use_token_type_ids: str = field(
        default="auto",
        metadata={
            "help": "Feed token_type_ids: auto (what training recorded in the model's "
            "chat_config.json; with no record, when the model takes them), true or false.",
            "choices": ["auto", "true", "false"],
        },
    )
    use_cpu: bool = field(default=False, metadata={"help": "Evaluate on the CPU."})
    bf16: bool = field(default=False, metadata={"help": "Evaluate in bfloat16."})
    output_file: str | None = field(
        default=None,
        metadata={
            "help": "JSON results file (default: eval_<split>.json in the model folder, or "
            "in the current folder for a Hub id)."
        },
    )

    def __post_init__(self):
        if not self.model:
            raise ValueError("--model is required: the folder of a trained model (or a Hub id).")
        if self.split is not None and self.split not in ("train", "validation", "test", "valid"):
            raise ValueError(f"--split must be validation or test, got {self.split!r}.")
        if self.split == "valid":
            self.split = "validation"
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}.")
        if self.num_samples < 0:
            raise ValueError(f"--num_samples must be >= 0, got {self.num_samples}.")


def cmd_eval(argv: list[str]) -> int:
    import json
    from pathlib import Path

    from accelerate import PartialState

    from ..data import load_dialogues
    from ..evaluation import evaluate_model
    from ..loading import load_causal_lm, load_tokenizer_for
    from ..training.arguments import DataArguments

    eval_args, data_args = parse(
        (EvalArguments, DataArguments),
        argv,
        "gpt2chat eval",
        "Token-weighted perplexity per dataset and overall, and unigram F1, BLEU and "
        "distinct-1/2 of replies generated for a sample of contexts.",
    )
    split = eval_args.split or data_args.eval_split
    tokenizer = load_tokenizer_for(eval_args.model, arg="--model")
    model = load_causal_lm(
        eval_args.model, dtype=eval_args.torch_dtype, tokenizer=tokenizer, arg="--model"
    )
    if data_args.prepared_dir:
        import datasets

        dialogues = datasets.load_from_disk(str(Path(data_args.prepared_dir) / split))
    else:
        common = {"train_frac": data_args.train_frac_for(split),
                  "normalize": data_args.normalize_text}  # fmt: skip
        names = data_args.dataset_names
        roots = _per_dataset_dirs(data_args.data_dir, names)
        dialogues = {
            name: load_dialogues(name, split, **{**common, "data_dir": root})
            for name, root in zip(names, roots)
        }
    report = evaluate_model(
        model,
        tokenizer,
        dialogues,
        **data_args.render_kwargs,
        batch_size=eval_args.batch_size,
        num_samples=eval_args.num_samples,
        max_new_tokens=eval_args.max_new_tokens,
        do_sample=eval_args.do_sample,
        top_p=eval_args.top_p,
        temperature=eval_args.temperature,
        seed=eval_args.seed,
        use_token_type_ids=_token_types(eval_args),
        use_cpu=eval_args.use_cpu,
        bf16=eval_args.bf16,
        max_examples=data_args.max_eval_samples,
    )
    if not PartialState().is_main_process:
        return 0
    output = (
        Path(eval_args.output_file)
        if eval_args.output_file
        else (
            (Path(eval_args.model) if Path(eval_args.model).is_dir() else Path("."))
            / f"eval_{split}.json"
        )
    )
    result = report.to_dict()
    result.update({"model": eval_args.model, "split": split})
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    print(f"\n{eval_args.model} on {split}:\n")
    print(report.format_table())
    print(f"\nResults written to {output}")
    return 0


def _token_types(eval_args) -> bool | None:
    """The ``--use_token_type_ids`` choice; ``auto``: the model folder's record (``None``: none,
    :func:`~gpt2chat.evaluation.evaluate_model` decides)."""
    choice = {"auto": None, "true": True, "false": False}[eval_args.use_token_type_ids]
    if choice is None:
        from ..chat.settings import ChatSettings

        saved = ChatSettings.from_pretrained(eval_args.model)
        choice = saved.use_token_type_ids if saved is not None else None
    return choice


def _per_dataset_dirs(data_dir, names):
    """One data folder per dataset: ``<data_dir>/<name>`` when it exists, else ``data_dir``."""
    from pathlib import Path

    if data_dir is None or len(names) == 1:
        return [data_dir] * len(names)
    root = Path(data_dir)
    return [str(root / n) if (root / n).is_dir() else str(root) for n in names]
