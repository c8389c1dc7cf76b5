"""``gpt2chat export``: a plain Hugging Face model folder from an adapter, a GGUF file or any
loadable model."""

from __future__ import annotations

import logging
from pathlib import Path

from ..chat.settings import ChatSettings
from ..loading import is_adapter_dir, load_causal_lm, load_tokenizer_for, resolve_dtype
from ..tokens import CONFIG_KEY, get_speaker_tokens

logger = logging.getLogger(__name__)

__all__ = ["export_model"]


def export_model(model: str, output_dir: str, *, torch_dtype: str | None = None) -> str:
    """Write ``model`` as a plain folder (``AutoModelForCausalLM`` + ``AutoTokenizer`` load it).

    A LoRA adapter folder is merged into its base model (the trained speaker-token rows
    included); a ``.gguf`` file is saved dequantized; the tokenizer (chat template, speaker
    tokens), the model card and the settings saved with it (the decoding fields of
    ``generation_config.json``, gpt2chat's ``chat_config.json`` with the token-type record) are
    copied along; the generation config stops at ``<eos>`` or ``<sp1>``.
    """
    source = Path(model)
    out = Path(output_dir)
    if source.exists() and out.resolve() == source.resolve():
        raise ValueError("--output_dir must differ from --model (the source is read from there).")
    tokenizer = load_tokenizer_for(model, arg="--model")
    merged = load_causal_lm(model, tokenizer=tokenizer, merge=True, arg="--model")
    if torch_dtype and torch_dtype != "auto":
        merged = merged.to(resolve_dtype(torch_dtype))
    if getattr(merged.config, "quantization_config", None) is not None:
        raise ValueError(f"{model} is quantized; export a full-precision model instead.")
    tokens = get_speaker_tokens(tokenizer) if CONFIG_KEY in tokenizer.init_kwargs else None
    if tokens is not None:  # where a reply ends, for every engine that reads the folder
        merged.generation_config.eos_token_id = list(tokens.reply_stop_ids)
        merged.generation_config.pad_token_id = tokens.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    card = source / "README.md" if source.is_dir() else None
    if card is not None and card.is_file():
        text = card.read_text(encoding="utf-8")
        if is_adapter_dir(source):
            text = text.replace("library_name: peft", "library_name: transformers", 1)
            text += (
                f"\n## Export\n\nThe LoRA adapter of `{source.name}` merged into its base model "
                "by `gpt2chat export`: a plain model, no peft needed.\n"
            )
        (out / "README.md").write_text(text, encoding="utf-8")
    settings = ChatSettings.from_pretrained(source) if source.is_dir() else None
    if settings is not None:  # the settings travel with the model (the stop ids: set above)
        settings.save_pretrained(out)
    logger.info("Exported %s to %s", model, out)
    return str(out)
