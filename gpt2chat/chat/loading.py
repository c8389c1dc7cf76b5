"""Loading a chat model: device and dtype resolution, a model folder / hub id / ``.gguf`` file /
PEFT adapter folder into a plain causal LM (what :meth:`ChatSession.from_pretrained` uses)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

__all__ = ["resolve_dtype"]


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def _cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: trust torch's capability string
        return "AVX512" in str(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")())
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """Turn ``dtype`` (``None``/``"auto"``, a name such as ``"bf16"``, or a ``torch.dtype``) into a dtype.

    ``auto``: bf16 on a GPU that supports it (else fp16), fp32 on CPU. ``fp16`` on CPU is refused
    (slow and inaccurate there); ``bf16`` on a CPU without native bf16 works but logs a warning.
    """
    device = torch.device(device)
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
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
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("dtype='float16' is not supported on CPU: use 'bfloat16' or 'float32'.")
    if device.type == "cpu" and dtype == torch.bfloat16 and not _cpu_has_bf16():
        logger.warning("This CPU has no native bf16: bfloat16 will be slow; consider float32.")
    return dtype


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available: use device='cpu'.")
    return device


def _gguf_parts(name: str) -> tuple[str, str] | None:
    path = Path(name)
    if path.suffix == ".gguf" and path.is_file():
        return str(path.parent), path.name
    return None


def _load_model(name: str, dtype: torch.dtype):
    """``AutoModelForCausalLM.from_pretrained`` for a folder, hub id or ``.gguf`` file."""
    from transformers import AutoModelForCausalLM

    gguf = _gguf_parts(name)
    if gguf:
        model = AutoModelForCausalLM.from_pretrained(gguf[0], gguf_file=gguf[1], dtype=dtype)
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            # GGUF weights are dequantized on load: the model is a plain float model.
            quantizer.remove_quantization_config(model)
    else:
        from ..training.checkpoints import explained_load_failure

        with explained_load_failure(name):
            model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    return model


def _load_adapter(path: Path, dtype: torch.dtype, merge: bool):
    """Base model + PEFT adapter; returns the model and where the tokenizer lives."""
    from peft import PeftConfig, PeftModel

    config = PeftConfig.from_pretrained(str(path))
    base_name = config.base_model_name_or_path
    if not base_name:
        raise ValueError(f"{path}/adapter_config.json names no base_model_name_or_path.")
    model = _load_model(base_name, dtype)
    has_tokenizer = (path / "tokenizer_config.json").is_file()
    tok_source = str(path) if has_tokenizer else base_name
    if has_tokenizer:
        from ..tokens import load_tokenizer

        n_tokens = len(load_tokenizer(str(path)))
        if n_tokens > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(n_tokens, mean_resizing=False)
    from ..training.checkpoints import explained_load_failure

    with explained_load_failure(path):
        model = PeftModel.from_pretrained(model, str(path))
    if merge:
        model = model.merge_and_unload()
    return model, tok_source
