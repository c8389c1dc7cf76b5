"""Loading a causal LM, the one place that does it for training, chat, evaluation and export.

Owns: the device (:func:`resolve_device`) and dtype (:func:`resolve_dtype`) a model loads on and
in; the model references (:func:`load_causal_lm`): a Hub id, a model folder, a ``.gguf`` file or
a folder + ``gguf_file`` (dequantized on load), a PEFT adapter folder (``adapter_config.json``:
its base model, then the adapter, merged on request, :func:`merge_adapter`); the one clear error
for a reference that cannot load (:func:`check_model_path`); the tokenizer that belongs to a
model reference (:func:`load_tokenizer_for`); and the facts read off a loaded model
(:func:`unwrap_peft`, :func:`accepts_token_type_ids`, :func:`context_size`).

Building a model from a config (``--from_scratch_config``) and wrapping one in LoRA belong to
training (:mod:`gpt2chat.training.modeling`).
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .weights import explained_load_failure

logger = logging.getLogger(__name__)

__all__ = [
    "ADAPTER_CONFIG",
    "accepts_token_type_ids",
    "check_model_path",
    "context_size",
    "cpu_has_bf16",
    "is_adapter_dir",
    "load_causal_lm",
    "load_tokenizer_for",
    "merge_adapter",
    "resolve_device",
    "resolve_dtype",
    "split_gguf",
    "unwrap_peft",
]

# --------------------------------------------------------------------------- device and dtype
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: trust torch's capability string
        return "AVX512" in str(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")())
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else the CPU; a CUDA device without CUDA is a
    ``ValueError``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available: use device='cpu'.")
    return device


def resolve_dtype(
    dtype: str | torch.dtype | None,
    device: str | torch.device | None = None,
    *,
    default: str | torch.dtype = "auto",
) -> torch.dtype | str:
    """Turn ``dtype`` (a name such as ``"bf16"``, a ``torch.dtype``, ``"auto"``, or ``None`` for
    ``default``) into a ``torch.dtype``.

    ``"auto"`` with a ``device`` (chat): bf16 on a GPU that supports it (else fp16), fp32 on CPU.
    ``"auto"`` without one stays ``"auto"``: ``from_pretrained`` then keeps the checkpoint's own
    dtype (evaluation, export). Training passes ``default="float32"``. On a CPU ``device``,
    ``float16`` is refused (slow and inaccurate there) and ``bfloat16`` without native bf16 works
    but logs a warning.
    """
    if dtype is None:
        dtype = default
    if isinstance(dtype, str) and dtype == "auto":
        if device is None:
            return "auto"
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPES:
            raise ValueError(
                f"dtype={dtype!r} is not supported: use 'auto', 'float32', 'bfloat16' or 'float16'."
            )
        dtype = _DTYPES[dtype.lower()]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype={dtype} is not supported: use float32, bfloat16 or float16.")
    if device is not None and torch.device(device).type == "cpu":
        if dtype == torch.float16:
            raise ValueError(
                "dtype='float16' is not supported on CPU: use 'bfloat16' or 'float32'."
            )
        if dtype == torch.bfloat16 and not cpu_has_bf16():
            logger.warning("This CPU has no native bf16: bfloat16 will be slow; consider float32.")
    return dtype


# --------------------------------------------------------------------------- model references
ADAPTER_CONFIG = "adapter_config.json"
#: What a folder holds when a model (or, for the tokenizer, its tokenizer) can load from it.
MODEL_FILES = ("config.json", ADAPTER_CONFIG)
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json")
WHAT_TO_PASS = (
    "pass a folder written by `gpt2chat train` (or save_pretrained), a .gguf file, or a Hub id "
    "such as gpt2"
)


def split_gguf(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``("dir", "model.gguf")`` for a path to a ``.gguf`` file, else ``(name_or_path, gguf_file)``
    (a ``.gguf`` path that is no file is left to :func:`check_model_path`)."""
    path = Path(name_or_path).expanduser()
    if gguf_file is None and path.suffix == ".gguf" and path.is_file():
        return str(path.parent), path.name
    return name_or_path, gguf_file


def is_adapter_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a PEFT adapter (``adapter_config.json``)."""
    return (Path(path).expanduser() / ADAPTER_CONFIG).is_file()


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


def _shown(arg: str | None, name: str) -> str:
    return f"{arg} {name}" if arg else name


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
    shown = _shown(arg, name)
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


def _adapter_base(path: str | Path) -> str:
    """The ``base_model_name_or_path`` an adapter folder's ``adapter_config.json`` names."""
    config = json.loads((Path(path).expanduser() / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base:
        raise ValueError(
            f"{path}/{ADAPTER_CONFIG} does not name its base model (base_model_name_or_path)."
        )
    return base


# --------------------------------------------------------------------------- tokenizer
def load_tokenizer_for(
    model_name_or_path: str,
    *,
    tokenizer_name_or_path: str | None = None,
    gguf_file: str | None = None,
    arg: str | None = "--model_name_or_path",
) -> PreTrainedTokenizerBase:
    """The tokenizer that belongs to a model reference (see :func:`gpt2chat.tokens.load_tokenizer`):
    the one in its folder or ``.gguf`` file; for an adapter folder saved without one, its base
    model's.

    A path that does not exist or holds no model is a one-line error naming ``arg``
    (:func:`check_model_path`), as is a Hub id the Hub cannot provide (``arg=None``, the Python
    API: the Hub's ``OSError`` as it is).
    """
    from .tokens import load_tokenizer

    if tokenizer_name_or_path:
        name, gguf = tokenizer_name_or_path, None
        arg = "--tokenizer_name_or_path" if arg else None
    else:
        name, gguf = split_gguf(str(model_name_or_path), gguf_file)
    check_model_path(name, arg=arg, gguf_file=gguf, tokenizer=True)
    folder = Path(name).expanduser()
    has_tokenizer = any((folder / f).is_file() for f in TOKENIZER_FILES)
    if not gguf and not has_tokenizer and is_adapter_dir(folder):
        return load_tokenizer_for(_adapter_base(folder), arg=arg)
    try:
        if gguf and folder.is_dir():
            return load_tokenizer(str(folder / gguf))
        if gguf:
            return load_tokenizer(name, gguf_file=gguf)
        return load_tokenizer(str(folder) if folder.exists() else name)
    except (OSError, ValueError) as err:
        if folder.is_dir() and not gguf and not has_tokenizer:
            raise ValueError(
                f"{_shown(arg, name)} holds no tokenizer (tokenizer.json, tokenizer_config.json, "
                "or vocab.json and merges.txt): save the tokenizer beside the model."
            ) from err
        if isinstance(err, ValueError) or arg is None:
            raise
        raise _load_error(arg, name, err) from err


# --------------------------------------------------------------------------- model
def _from_pretrained(name: str, gguf: str | None, dtype) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained``; a GGUF model comes back a plain float model."""
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype, **({"gguf_file": gguf} if gguf else {})}
    with explained_load_failure(name):
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    if gguf:
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            # transformers dequantizes GGUF weights on load but keeps the model marked quantized,
            # which Trainer and save_pretrained refuse; the weights are plain tensors now.
            quantizer.remove_quantization_config(model)
        if Path(name).is_dir():
            # Name the .gguf file itself as the model's origin, so a LoRA adapter trained on it
            # records a base model that loads again (the folder alone has no config.json).
            model.config._name_or_path = model.name_or_path = str(Path(name) / gguf)
    return model


def load_causal_lm(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype | None = "auto",
    gguf_file: str | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    merge: bool = False,
    arg: str | None = "--model_name_or_path",
) -> PreTrainedModel:
    """The causal LM a model reference names, on the CPU.

    * a ``.gguf`` file (or a folder + ``gguf_file``): loaded dequantized; the quantization marker
      is removed so the model trains, generates and saves like any other.
    * a folder with ``adapter_config.json`` (a LoRA checkpoint): its base model, resized to
      ``tokenizer`` (default: the adapter's, :func:`load_tokenizer_for`), with the adapter on
      top: a ``peft.PeftModel``, or with ``merge`` a plain model with the adapter merged in.
    * otherwise (a folder, a Hub id) ``AutoModelForCausalLM.from_pretrained``.

    ``dtype``: see :func:`resolve_dtype` (no device: ``"auto"`` keeps the checkpoint's dtype).
    A reference that cannot load is one clear error naming ``arg`` (the command-line flag; see
    :func:`check_model_path`); ``arg=None`` (the Python API) names the reference alone and lets
    the Hub's ``OSError`` through as it is.
    """
    dtype = resolve_dtype(dtype)
    name, gguf = split_gguf(str(name_or_path), gguf_file)
    check_model_path(name, arg=arg, gguf_file=gguf)
    name = str(Path(name).expanduser()) if Path(name).expanduser().exists() else name
    if is_adapter_dir(name):
        return _load_adapter(name, dtype, tokenizer, merge)
    try:
        return _from_pretrained(name, gguf, dtype)
    except OSError as err:
        if arg is None:
            raise
        raise _load_error(arg, name, err) from err


def _load_adapter(path: str, dtype, tokenizer, merge: bool) -> PreTrainedModel:
    from peft import PeftModel

    base_name = _adapter_base(path)
    base_dir, gguf = split_gguf(base_name)
    check_model_path(base_dir, arg=f"{path}/{ADAPTER_CONFIG} names", gguf_file=gguf)
    base = _from_pretrained(base_dir, gguf, dtype)
    if tokenizer is None:
        tokenizer = load_tokenizer_for(path, arg=None)
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    logger.info("Loading the LoRA adapter %s on top of %s", path, base_name)
    with explained_load_failure(path):
        model = PeftModel.from_pretrained(base, path)
    return merge_adapter(model) if merge else model


def merge_adapter(model):
    """A plain transformers model with the LoRA weights (and trained token rows) merged in
    (``model`` itself when it has no adapter)."""
    if not hasattr(model, "merge_and_unload"):
        return model
    return model.merge_and_unload()


# --------------------------------------------------------------------------- model facts
def unwrap_peft(model):
    """The transformers model under a ``peft`` wrapper (or ``model`` itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def accepts_token_type_ids(model) -> bool:
    """Whether the model's forward takes ``token_type_ids`` (GPT-2 does, Llama-style models
    don't)."""
    base = unwrap_peft(model)
    return "token_type_ids" in inspect.signature(base.forward).parameters


def context_size(model) -> int | None:
    """The number of positions the model can attend to (``n_positions`` /
    ``max_position_embeddings``)."""
    config = unwrap_peft(model).config
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
