"""Model loading for training, evaluation and export: a Hub id, a local folder, a GGUF file, a
config for a from-scratch run, or a LoRA adapter folder; plus the few model facts the trainer
needs (does the forward take ``token_type_ids``, how long is the context)."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .checkpoints import explained_load_failure

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .arguments import LoraArguments, ModelArguments

logger = logging.getLogger(__name__)

__all__ = [
    "accepts_token_type_ids",
    "apply_lora",
    "check_model_path",
    "context_size",
    "is_adapter_dir",
    "load_model",
    "load_tokenizer_for",
    "merge_adapter",
    "resolve_dtype",
    "split_gguf",
    "unwrap_peft",
]

ADAPTER_CONFIG = "adapter_config.json"


def split_gguf(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``("dir", "model.gguf")`` for a path to a ``.gguf`` file, else ``(name_or_path, gguf_file)``."""
    path = Path(name_or_path)
    if gguf_file is None and path.suffix == ".gguf":
        if not path.is_file():
            raise ValueError(f"--model_name_or_path {name_or_path}: no such GGUF file.")
        return str(path.parent), path.name
    return name_or_path, gguf_file


def resolve_dtype(name: str | None, default: str = "float32"):
    """``"bfloat16"`` -> ``torch.bfloat16``; ``"auto"`` stays ``"auto"``; ``None`` -> ``default``."""
    name = name or default
    if name == "auto":
        return "auto"
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"--torch_dtype {name!r} is not a torch dtype (float32, bfloat16...).")
    return dtype


def is_adapter_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a PEFT adapter (``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


#: What a folder holds when a model (or, for the tokenizer, its tokenizer) can load from it.
MODEL_FILES = ("config.json", ADAPTER_CONFIG)
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json")
WHAT_TO_PASS = (
    "pass a folder written by `gpt2chat train` (or save_pretrained), a .gguf file, or a Hub id "
    "such as gpt2"
)


def _looks_local(name: str) -> bool:
    """Whether ``name`` can only be a path (a Hub id is ``name`` or ``namespace/name``)."""
    return (
        Path(name).is_absolute()
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or "\\" in name
        or Path(name).exists()
        or (Path(name).parent.name != "" and Path(name).parent.is_dir())  # out/typo
    )


def check_model_path(
    name: str,
    *,
    arg: str | None = "--model_name_or_path",
    gguf_file: str | None = None,
    tokenizer: bool = False,
) -> None:
    """One clear error for a local model reference that cannot load, before transformers turns
    it into a Hub lookup (``Repo id must be in the form ...``).

    ``FileNotFoundError`` for a path that does not exist; ``ValueError`` for a file that is not
    a ``.gguf`` file and a folder with no ``config.json`` / ``adapter_config.json`` (with
    ``tokenizer``: nor tokenizer files). A Hub id is left to the Hub. The messages start with
    ``arg`` (the command-line flag) and ``name``; ``arg=None``: ``name`` alone (the Python API).
    """
    path = Path(name).expanduser()
    if not _looks_local(name):
        return
    shown = f"{arg} {name}" if arg else name
    if not path.exists():
        kind = "GGUF file" if path.suffix == ".gguf" else "model folder or file"
        raise FileNotFoundError(f"{shown}: no such {kind}; {WHAT_TO_PASS}.")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"{shown} is a file, not a model folder: {WHAT_TO_PASS}.")
        return
    if gguf_file:
        if not (path / gguf_file).is_file():
            raise FileNotFoundError(f"{shown} holds no {gguf_file} (--gguf_file).")
        return
    wanted = MODEL_FILES + (TOKENIZER_FILES if tokenizer else ())
    if not any((path / f).is_file() for f in wanted):
        holds = (
            "config.json, adapter_config.json or tokenizer files"
            if tokenizer
            else "config.json or adapter_config.json"
        )
        raise ValueError(f"{shown} is not a model folder (no {holds} in it): {WHAT_TO_PASS}.")


def _load_error(arg: str, name: str, err: OSError) -> ValueError:
    """A one-line error for a model that does not load: a local folder that transformers
    refuses, or a name the Hub could not provide (not found, no network)."""
    detail = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
    if _looks_local(name):
        return ValueError(f"{arg} {name} does not load: {detail}")
    return ValueError(
        f"{arg} {name}: not a local folder, and the Hugging Face Hub could not provide it "
        f"({detail}). Check the name, or {WHAT_TO_PASS}."
    )


def load_tokenizer_for(
    model_name_or_path: str,
    *,
    tokenizer_name_or_path: str | None = None,
    gguf_file: str | None = None,
    arg: str = "--model_name_or_path",
) -> PreTrainedTokenizerBase:
    """The tokenizer that belongs to a model reference (see :func:`gpt2chat.tokens.load_tokenizer`).

    A path that does not exist or holds no model is a one-line error naming ``arg``
    (:func:`check_model_path`), as is a Hub id the Hub cannot provide.
    """
    from ..tokens import load_tokenizer

    if tokenizer_name_or_path:
        name, gguf, arg = tokenizer_name_or_path, None, "--tokenizer_name_or_path"
    else:
        name, gguf = split_gguf(model_name_or_path, gguf_file)
    check_model_path(name, arg=arg, gguf_file=gguf, tokenizer=True)
    try:
        if gguf and Path(name).is_dir():
            return load_tokenizer(str(Path(name) / gguf))
        if gguf:
            return load_tokenizer(name, gguf_file=gguf)
        return load_tokenizer(name)
    except (OSError, ValueError) as err:
        folder = Path(name)
        if (
            folder.is_dir()
            and not gguf
            and not any((folder / f).is_file() for f in TOKENIZER_FILES)
        ):
            raise ValueError(
                f"{arg} {name} holds no tokenizer (tokenizer.json, tokenizer_config.json, or "
                "vocab.json and merges.txt): save the tokenizer beside the model."
            ) from err
        if isinstance(err, ValueError):
            raise
        raise _load_error(arg, name, err) from err


def _from_scratch(model_args: ModelArguments) -> PreTrainedModel:
    from transformers import AutoConfig, AutoModelForCausalLM

    from .arguments import parse_config_overrides

    source = Path(model_args.from_scratch_config)
    if source.is_file():
        values = json.loads(source.read_text())
        model_type = values.pop("model_type", None)
        if not model_type:
            raise ValueError(
                f"--from_scratch_config {source} has no 'model_type' key (e.g. \"gpt2\")."
            )
        config = AutoConfig.for_model(model_type, **values)
    else:
        config = AutoConfig.from_pretrained(str(source))
    if model_args.config_overrides:
        overrides = parse_config_overrides(model_args.config_overrides)
        unknown = [k for k in overrides if not hasattr(config, k)]
        if unknown:
            raise ValueError(
                f"--config_overrides: {unknown} are not fields of {type(config).__name__}."
            )
        config.update(overrides)
    dtype = resolve_dtype(model_args.torch_dtype)
    model = AutoModelForCausalLM.from_config(
        config, dtype=torch.float32 if dtype == "auto" else dtype
    )
    logger.info(
        "Built a %s from scratch (%.1fM parameters)",
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model


def load_model(
    model_args: ModelArguments,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    default_dtype: str = "float32",
    arg: str = "--model_name_or_path",
) -> PreTrainedModel:
    """Load the causal LM described by ``model_args``.

    * ``from_scratch_config`` set: a randomly initialised model from that config.
    * a ``.gguf`` file (or ``gguf_file``): loaded dequantized; the quantization marker is removed
      so the model trains and saves like any other.
    * a folder with ``adapter_config.json`` (a LoRA checkpoint): its base model, resized to the
      adapter's tokenizer, with the adapter on top (a ``peft.PeftModel``).
    * otherwise ``AutoModelForCausalLM.from_pretrained``.
    """
    from transformers import AutoModelForCausalLM

    if model_args.from_scratch_config:
        return _from_scratch(model_args)
    dtype = resolve_dtype(model_args.torch_dtype, default_dtype)
    name, gguf = split_gguf(model_args.model_name_or_path, model_args.gguf_file)
    check_model_path(name, arg=arg, gguf_file=gguf)
    if is_adapter_dir(name):
        return _load_adapter(name, dtype, tokenizer)
    kwargs = {"dtype": dtype}
    if gguf:
        kwargs["gguf_file"] = gguf
    try:
        with explained_load_failure(name):
            model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except OSError as err:
        raise _load_error(arg, name, err) from err
    quantizer = getattr(model, "hf_quantizer", None)
    if gguf and quantizer is not None:
        # transformers dequantizes GGUF weights on load but keeps the model marked quantized,
        # which Trainer and save_pretrained refuse; the weights are plain tensors now.
        quantizer.remove_quantization_config(model)
    if gguf and Path(name).is_dir():
        # Name the .gguf file itself as the model's origin, so a LoRA adapter trained on it
        # records a base model that loads again (the folder alone has no config.json).
        model.config._name_or_path = model.name_or_path = str(Path(name) / gguf)
    return model


def _load_adapter(path: str, dtype, tokenizer) -> PreTrainedModel:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    base_name = config.get("base_model_name_or_path")
    if not base_name:
        raise ValueError(
            f"{path}/{ADAPTER_CONFIG} does not name its base model (base_model_name_or_path)."
        )
    base_dir, gguf = split_gguf(base_name)
    kwargs = {"dtype": dtype, **({"gguf_file": gguf} if gguf else {})}
    with explained_load_failure(base_dir):
        base = AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)
    if gguf and getattr(base, "hf_quantizer", None) is not None:
        base.hf_quantizer.remove_quantization_config(base)
    if tokenizer is None:
        tokenizer = load_tokenizer_for(path)
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    logger.info("Loading the LoRA adapter %s on top of %s", path, base_name)
    with explained_load_failure(path):
        return PeftModel.from_pretrained(base, path)


def unwrap_peft(model):
    """The transformers model under a ``peft`` wrapper (or ``model`` itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def accepts_token_type_ids(model) -> bool:
    """Whether the model's forward takes ``token_type_ids`` (GPT-2 does, Llama-style models don't)."""
    base = unwrap_peft(model)
    return "token_type_ids" in inspect.signature(base.forward).parameters


def context_size(model) -> int | None:
    """The number of positions the model can attend to (``n_positions`` / ``max_position_embeddings``)."""
    config = unwrap_peft(model).config
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def apply_lora(model, lora_args: LoraArguments, speaker_token_ids: list[int] | None = None):
    """Wrap ``model`` in a LoRA ``PeftModel`` (the speaker tokens' embedding rows trained too)."""
    from peft import LoraConfig, get_peft_model

    targets = lora_args.target_modules_for(getattr(model.config, "model_type", None))
    config = LoraConfig(
        r=lora_args.lora_r,
        lora_alpha=lora_args.lora_alpha,
        lora_dropout=lora_args.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        trainable_token_indices=(
            sorted(set(speaker_token_ids))
            if lora_args.lora_train_speaker_embeddings and speaker_token_ids
            else None
        ),
    )
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info(
        "LoRA on %s: %d trainable parameters of %d (%.2f%%)",
        targets,
        trainable,
        total,
        100 * trainable / max(total, 1),
    )
    return peft_model


def merge_adapter(model):
    """A plain transformers model with the LoRA weights (and trained token rows) merged in."""
    if not hasattr(model, "merge_and_unload"):
        return model
    return model.merge_and_unload()
