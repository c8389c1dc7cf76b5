"""The decoding options' checks and defaults, and what a model says about itself.

Owns the ``GenerationConfig`` the :class:`~gpt2chat.chat.engine.Engine` decodes with (the
recipe's defaults, user options, the stop ids), the checks on the engine's own options (cache,
guidance, reranking), the one-line description of a decoding, and the facts read off a model
(context size, ``token_type_ids``, the cache argument). Every ``ValueError`` names the parameter
and the fix. A new decoding option is checked here and applied in ``engine.py``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..loading import context_size as model_context_size
from ..loading import unwrap_peft
from ..tokens import SpeakerTokens
from .guidance import check_guidance_scale
from .settings import MIN_TEMPERATURE

if TYPE_CHECKING:
    from transformers import GenerationConfig

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_IMPLEMENTATIONS",
    "DEFAULT_GENERATION_OPTIONS",
    "TOKEN_TYPES_ATTR",
    "build_generation_config",
    "check_engine_options",
    "context_size",
    "describe_decoding",
    "recorded_token_types",
    "token_type_choice",
    "token_types_for",
]

#: The original recipe's decoding: nucleus sampling with ``top_p=0.8`` (no top-k).
DEFAULT_GENERATION_OPTIONS: dict[str, Any] = {
    "do_sample": True,
    "top_p": 0.8,
    "top_k": 0,
    "temperature": 1.0,
    "max_new_tokens": 64,
}
#: Options that only matter when sampling: dropped from the defaults under greedy / beam search.
_SAMPLING_ONLY = ("top_p", "top_k", "temperature")
#: Set by the engine itself; a user value would break stopping or the prompt format.
_RESERVED = ("eos_token_id", "pad_token_id", "bos_token_id", "max_length", "streamer")
CACHE_IMPLEMENTATIONS = ("dynamic", "static")


# --------------------------------------------------------------------------- the model
def forward_parameters(model) -> set[str]:
    return set(inspect.signature(unwrap_peft(model).forward).parameters)


def context_size(model, tokenizer) -> int:
    """The model's context size (its position limit), else the tokenizer's, else 1024."""
    size = model_context_size(model)
    if size:
        return size
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**6 else 1024


#: The attribute on a model object in which :class:`~gpt2chat.DialogueTrainer` records its
#: token-type choice (a saved folder's record is ``chat_config.json``'s ``use_token_type_ids``).
TOKEN_TYPES_ATTR = "gpt2chat_use_token_type_ids"


def recorded_token_types(model) -> bool | None:
    """Whether ``model`` was trained with ``token_type_ids``: for a model a
    :class:`~gpt2chat.DialogueTrainer` trained in this process, its choice; else the record in
    the ``chat_config.json`` of the local folder it was loaded from (``None``: no such record;
    a broken file is logged and treated as none)."""
    from pathlib import Path

    from .settings import CHAT_CONFIG_NAME, ChatSettings

    inner = unwrap_peft(model)
    trained = getattr(inner, TOKEN_TYPES_ATTR, None)
    if trained is not None:
        return bool(trained)
    folder = getattr(getattr(inner, "config", None), "name_or_path", None)
    path = Path(str(folder)) / CHAT_CONFIG_NAME if folder else None
    if path is None or not path.is_file():
        return None
    try:
        return ChatSettings.from_file(path).use_token_type_ids
    except ValueError as err:
        logger.warning("Ignoring %s: %s", CHAT_CONFIG_NAME, err)
        return None


def token_types_for(model, choice: bool | None = None) -> bool:
    """Feed ``token_type_ids`` to ``model``? ``choice``, else what training recorded
    (:func:`recorded_token_types`), else the rule of :func:`token_type_choice`. For the chat
    engine and evaluation alike."""
    if choice is None:
        choice = recorded_token_types(model)
    return token_type_choice(choice, forward_parameters(model))


def token_type_choice(choice: bool | None, params: set[str]) -> bool:
    """Feed ``token_type_ids``? What training recorded (``choice``), else, with no record, when
    the forward accepts them (the rule before gpt2chat recorded it), said in the log."""
    accepts = "token_type_ids" in params
    if choice is None:
        if accepts:
            logger.warning(
                "No record of whether this model was trained with token_type_ids (its folder "
                "has no use_token_type_ids in chat_config.json): feeding them, as gpt2chat did "
                "for such checkpoints. Pass use_token_type_ids=False for a model trained "
                "without them."
            )
        return accepts
    if choice and not accepts:
        raise ValueError(
            "`use_token_type_ids`=True but the model's forward takes no token_type_ids: pass "
            "False (or leave it unset)."
        )
    return bool(choice)


# --------------------------------------------------------------------------- the options
def build_generation_config(
    base: GenerationConfig | None,
    options: Mapping[str, Any],
    *,
    tokens: SpeakerTokens,
    max_len: int,
    compile: bool = False,
) -> GenerationConfig:
    """The ``GenerationConfig`` to decode with: ``base`` (or the recipe's defaults) under the
    user's ``options``, with the stop ids (``<eos>``, ``<sp1>``) and the pad / bos ids set."""
    from transformers import GenerationConfig

    known = set(GenerationConfig().to_dict())
    for key in options:
        if key in _RESERVED:
            raise ValueError(
                f"`{key}` is set by ChatSession (generation stops at <eos> or <sp1>; the "
                "length comes from max_new_tokens): remove it."
            )
        if key not in known or key.startswith("_"):
            raise ValueError(
                f"Unknown generation option `{key}`: use a GenerationConfig field such as "
                "top_p, top_k, temperature, do_sample, num_beams, repetition_penalty, "
                "no_repeat_ngram_size, max_new_tokens or min_new_tokens."
            )
    if base is not None:
        values = {k: v for k, v in base.to_dict().items() if v is not None and k in known}
        values = {k: v for k, v in values.items() if k not in _RESERVED}
        values.pop("guidance_scale", None)  # applied by the engine (see guidance_scale)
        values.setdefault("max_new_tokens", DEFAULT_GENERATION_OPTIONS["max_new_tokens"])
    else:
        values = dict(DEFAULT_GENERATION_OPTIONS)
    values.update({k: v for k, v in options.items() if v is not None})
    if not values.get("do_sample"):
        for key in _SAMPLING_ONLY:
            if key not in options:
                values.pop(key, None)
    if values.get("num_beams", 1) > 1 and values.get("early_stopping") is None:
        values["early_stopping"] = True
    max_new = values.get("max_new_tokens")
    if not isinstance(max_new, int) or max_new < 1:
        raise ValueError(f"`max_new_tokens` must be an integer >= 1, got {max_new!r}.")
    if max_new > max_len - 8:
        raise ValueError(
            f"`max_new_tokens`={max_new} leaves no room for a prompt in the context of "
            f"{max_len} tokens: lower it (e.g. to {max(1, max_len // 4)})."
        )
    top_p = values.get("top_p")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"`top_p` must be in (0, 1], got {top_p!r}.")
    temperature = values.get("temperature")
    if temperature is not None and not temperature >= MIN_TEMPERATURE:
        raise ValueError(
            f"`temperature` must be >= {MIN_TEMPERATURE:g}, got {temperature!r} (for greedy "
            "decoding pass do_sample=False)."
        )
    values.update(
        eos_token_id=list(tokens.reply_stop_ids),
        pad_token_id=tokens.pad_token_id,
        bos_token_id=tokens.bos_token_id,
        use_cache=True,
    )
    config = GenerationConfig(**values)
    if compile:
        from transformers import CompileConfig

        compile_config = CompileConfig(fullgraph=False, dynamic=False)
        compile_config._compile_all_devices = True  # also compile on CPU when asked
        config.compile_config = compile_config
    try:
        config.validate(strict=True)
    except ValueError as err:
        raise ValueError(f"Invalid generation options: {err}") from None
    return config


def check_engine_options(
    config: GenerationConfig,
    *,
    cache_implementation: str,
    guidance_scale: Any,
    num_candidates: Any,
    mmi_weight: Any,
) -> float:
    """Check the engine's own options against the decoding; return the guidance scale."""
    if cache_implementation not in CACHE_IMPLEMENTATIONS:
        raise ValueError(
            f"`cache_implementation` must be one of {CACHE_IMPLEMENTATIONS}, got "
            f"{cache_implementation!r}."
        )
    guidance_scale = check_guidance_scale(1.0 if guidance_scale is None else guidance_scale)
    beams = (config.num_beams or 1) > 1
    if guidance_scale != 1.0 and beams:
        raise ValueError(
            "`guidance_scale` works with sampling and greedy decoding, not beam search: "
            "set num_beams=1 or guidance_scale=1."
        )
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int):
        raise ValueError(f"`num_candidates` must be an integer >= 1, got {num_candidates!r}.")
    if not 1 <= num_candidates <= 64:
        raise ValueError(f"`num_candidates` must be between 1 (off) and 64, got {num_candidates}.")
    if num_candidates > 1 and (not config.do_sample or beams):
        raise ValueError(
            "`num_candidates` > 1 reranks sampled replies: it needs do_sample=True and "
            "num_beams=1 (or set num_candidates=1)."
        )
    if num_candidates > 1 and cache_implementation == "static":
        raise ValueError(
            "`num_candidates` > 1 decodes a batch, which the static cache (and compile) "
            "here does not: use cache_implementation='dynamic' or num_candidates=1."
        )
    if (
        isinstance(mmi_weight, bool)
        or not isinstance(mmi_weight, (int, float))
        or not mmi_weight >= 0
    ):
        raise ValueError(f"`mmi_weight` must be a number >= 0, got {mmi_weight!r}.")
    return guidance_scale


def describe_decoding(
    config: GenerationConfig,
    *,
    guidance_scale: float,
    num_candidates: int,
    mmi_weight: float,
    mmi_contexts: int = 0,
) -> str:
    """One line, e.g. ``"sampling (temperature 0.7, top-p 0.9), repetition penalty 1.2, context
    guidance 1.3, best of 6 candidates (MMI 0.5); up to 48 tokens"``."""
    if (config.num_beams or 1) > 1:
        parts = [f"beam search ({config.num_beams} beams)"]
    elif not config.do_sample:
        parts = ["greedy"]
    else:
        knobs = [f"temperature {config.temperature or 1.0:g}"]
        if config.top_k:
            knobs.append(f"top-k {config.top_k}")
        if config.top_p is not None and config.top_p < 1:
            knobs.append(f"top-p {config.top_p:g}")
        parts = [f"sampling ({', '.join(knobs)})"]
    if config.repetition_penalty not in (None, 1.0):
        parts.append(f"repetition penalty {config.repetition_penalty:g}")
    if config.no_repeat_ngram_size:
        parts.append(f"no repeated {config.no_repeat_ngram_size}-grams")
    if guidance_scale != 1.0:
        parts.append(f"context guidance {guidance_scale:g}")
    if num_candidates > 1:
        against = f" against {mmi_contexts} messages" if mmi_contexts else ""
        parts.append(f"best of {num_candidates} candidates (MMI {mmi_weight:g}{against})")
    return f"{', '.join(parts)}; up to {config.max_new_tokens} tokens"
