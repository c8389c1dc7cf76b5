"""Checkpoint folders: which are complete, which one ``--resume_from_checkpoint last`` resumes
from, and clear errors for damaged ones.

transformers' ``Trainer._save_checkpoint`` writes ``checkpoint-N`` in place: the model (config,
weights, tokenizer), then the optimizer, scheduler, scaler and RNG states, and
``trainer_state.json`` last; its ``get_last_checkpoint`` takes the highest N whatever the folder
holds. A save cut short (``kill -9``, a full disk) leaves a folder without
``trainer_state.json``, and resuming from it fails or, worse, starts a fresh optimizer.

This module builds on that order. ``trainer_state.json`` marks a finished transformers save;
:class:`CheckpointMixin` adds ``checkpoint_complete.json`` once the whole save is over (every
process done), listing each file and its size. A folder is complete when its marks are there and
its files match the list (else: the weights and training states are there, and whole by their
headers; nothing is loaded). ``"last"`` resumes from the newest complete checkpoint and names
the newer ones it passed over and why; a damaged checkpoint named explicitly is a ``ValueError``
naming it and what is wrong. The mixin also unmarks a step that is saved again before it writes
into it, turns loading errors into errors naming the checkpoint, and leaves the tied LM head
(GPT-2's ``lm_head.weight``, which ``save_pretrained`` does not write) out of the "missing
keys" warning.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

from ..weights import file_problem, weights_problems

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME",
    "CheckpointMixin",
    "checkpoint_problems",
    "find_resumable",
    "resolve_checkpoint",
    "write_manifest",
]

STATE_NAME = "trainer_state.json"  # transformers' TRAINER_STATE_NAME, written last
MANIFEST_NAME = "checkpoint_complete.json"
STATE_FILES = ("optimizer.", "scheduler.", "scaler.", "rng_state")


# --------------------------------------------------------------------------- file checks
def _manifest_problems(folder: Path) -> list[str]:
    try:
        listed = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
        listed = {str(name): int(size) for name, size in listed.items()}
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return [f"{MANIFEST_NAME} is damaged"]
    problems = []
    for name, size in listed.items():
        path = folder / name
        if not path.is_file():
            if name != STATE_NAME:  # reported on its own
                problems.append(f"no {name}")
        elif path.stat().st_size != size:
            problems.append(f"{name} is truncated ({path.stat().st_size} of {size} bytes)")
    return problems


def checkpoint_problems(folder: str | os.PathLike, *, full_state: bool = True) -> list[str]:
    """What keeps ``folder`` from being a complete checkpoint (``[]``: nothing).

    ``trainer_state.json`` must read; the files listed in ``checkpoint_complete.json`` must be
    there with their sizes (a folder without that list, from plain transformers or a save cut
    short just before it, is judged by the rest); the model weights and config must be there and
    whole; with ``full_state`` (``save_only_model`` off), the optimizer, scheduler and RNG states
    too. Only sizes and headers are read: nothing is loaded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    names = {p.name for p in folder.iterdir()}
    problems = []
    if STATE_NAME not in names:
        problems.append(f"no {STATE_NAME} (the save was cut short)")
    if MANIFEST_NAME in names:
        problems += _manifest_problems(folder)
    if STATE_NAME in names:
        try:
            json.loads((folder / STATE_NAME).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            problems.append(f"{STATE_NAME} is truncated or damaged")
    problems += weights_problems(folder, names)
    if full_state and not any(n.startswith("global_step") for n in names):  # not DeepSpeed
        if not any(n.startswith("optimizer") for n in names):  # .pt, .bin, FSDP's folder
            problems.append("no optimizer.pt")
        if "scheduler.pt" not in names:
            problems.append("no scheduler.pt")
        if not any(n.startswith("rng_state") and n.endswith(".pth") for n in names):
            problems.append("no rng_state.pth")
    states = [n for n in sorted(names) if n.startswith(STATE_FILES) and (folder / n).is_file()]
    problems += [p for n in states if (p := file_problem(folder / n))]
    return list(dict.fromkeys(problems))  # the list and the checks may say the same thing


def write_manifest(folder: str | os.PathLike) -> Path:
    """Write ``checkpoint_complete.json``: every file of the finished checkpoint and its size."""
    folder = Path(folder)
    files = {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith((MANIFEST_NAME, f".{MANIFEST_NAME}"))
    }
    tmp = folder / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps({"complete": True, "files": files}, indent=1), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST_NAME)
    return folder / MANIFEST_NAME


# --------------------------------------------------------------------------- choosing one
def find_resumable(
    output_dir: str | os.PathLike | None, *, full_state: bool = True
) -> tuple[str | None, list[tuple[str, list[str]]]]:
    """The newest complete ``checkpoint-N`` in ``output_dir`` (``None``: none) and the newer
    ones passed over, each with its problems."""
    passed_over: list[tuple[str, list[str]]] = []
    if not output_dir or not os.path.isdir(output_dir):
        return None, passed_over
    for path in reversed(sort_checkpoints(str(output_dir), PREFIX_CHECKPOINT_DIR)):
        problems = checkpoint_problems(path, full_state=full_state)
        if not problems:
            return path, passed_over
        passed_over.append((path, problems))
    return None, passed_over


def _describe(passed_over: list[tuple[str, list[str]]]) -> str:
    return "; ".join(f"{Path(p).name} ({', '.join(problems)})" for p, problems in passed_over)


def resolve_checkpoint(
    value: str | bool | None, output_dir: str | None, *, full_state: bool = True
) -> str | None:
    """Turn ``resume_from_checkpoint`` / ``--ckpt_name`` into a complete checkpoint folder.

    ``"last"``, ``"latest"``, ``"true"`` or ``True``: the newest complete ``checkpoint-*`` in
    ``output_dir`` (newer, incomplete ones are passed over with a warning naming them). A path,
    or a folder name inside ``output_dir``, must be a complete checkpoint folder.
    ``full_state=False`` (``save_only_model``): no optimizer, scheduler or RNG state needed.
    """
    if (
        value is None
        or value is False
        or (isinstance(value, str) and value.lower() in ("", "false"))
    ):
        return None
    if value is True or (isinstance(value, str) and value.lower() in ("true", "last", "latest")):
        found, passed_over = find_resumable(output_dir, full_state=full_state)
        if found is None and passed_over:
            raise ValueError(
                f"--resume_from_checkpoint {value}: no complete checkpoint in {output_dir}, only "
                f"damaged or cut-short ones: {_describe(passed_over)}. Train without resuming."
            )
        if found is None:
            raise ValueError(
                f"--resume_from_checkpoint {value}: no checkpoint-* folder in {output_dir}; "
                "train without resuming, or name a checkpoint folder."
            )
        if passed_over:
            logger.warning(
                "--resume_from_checkpoint %s: resuming from %s, the newest complete checkpoint; "
                "passed over %s",
                value,
                found,
                _describe(passed_over),
            )
        else:
            logger.info("--resume_from_checkpoint %s: %s, the newest checkpoint", value, found)
        return found
    path = Path(value)
    candidates = [path] + ([Path(output_dir) / path.name] if output_dir else [])
    for c in candidates:
        if c.is_dir():
            problems = checkpoint_problems(c, full_state=full_state)
            if problems:
                found, _ = find_resumable(c.parent, full_state=full_state)
                hint = (
                    f"resume from {found} (the newest complete one: --resume_from_checkpoint last)"
                    if found
                    else "train without resuming"
                )
                raise ValueError(
                    f"--resume_from_checkpoint {value}: {c} is damaged or incomplete: "
                    f"{', '.join(problems)}. Instead, {hint}."
                )
            return str(c)
    available = sorted(p.name for p in Path(output_dir or ".").glob("checkpoint-*") if p.is_dir())
    hint = (
        " The seed's .ckpt files are plain state dicts and cannot be resumed: start a new run."
        if path.suffix == ".ckpt"
        else ""
    )
    raise ValueError(
        f"--resume_from_checkpoint / --ckpt_name {value}: no such checkpoint folder. Checkpoints "
        f"in {output_dir}: {', '.join(available) or 'none'}.{hint}"
    )


# --------------------------------------------------------------------------- the trainer side
def _tied_and_shared(model, key: str) -> bool:
    """Whether parameter ``key`` is tied to another one and is the same tensor right now."""
    source = (getattr(model, "all_tied_weights_keys", None) or {}).get(key)
    if not source:
        return False
    try:
        return model.get_parameter(key) is model.get_parameter(source)
    except AttributeError:
        return False


class CheckpointMixin:
    """Trainer methods around checkpoints (mixed into ``DialogueTrainer`` before ``Trainer``)."""

    def _save_checkpoint(self, model, trial) -> None:
        folder = Path(self._get_output_dir(trial=trial)) / (
            f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        )
        if self.args.should_save:
            # Saving this step again (a run resumed from an earlier checkpoint): until the new
            # save ends, the folder mixes old and new files and must not look complete.
            for name in (MANIFEST_NAME, STATE_NAME):
                (folder / name).unlink(missing_ok=True)
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # every process has written its files
        if self.args.should_save and folder.is_dir():
            write_manifest(folder)

    def _loading(self, checkpoint, what: str, load, *args):
        from torch.cuda import OutOfMemoryError

        try:
            return load(checkpoint, *args)
        except (OutOfMemoryError, ValueError):
            raise
        except Exception as err:  # SafetensorError, torch.load's RuntimeError / UnpicklingError...
            first = (str(err).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")
            detail = f"{type(err).__name__}: {first}" if first else type(err).__name__
            raise ValueError(
                f"Cannot resume from {checkpoint}: its {what} do not load ({detail}). The "
                "checkpoint is damaged or belongs to another model: resume from an earlier "
                "checkpoint, or train without resuming."
            ) from err

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        load = super()._load_from_checkpoint
        self._loading(resume_from_checkpoint, "model weights", load, model)

    def _load_optimizer_and_scheduler(self, checkpoint) -> None:
        load = super()._load_optimizer_and_scheduler
        self._loading(checkpoint, "optimizer and scheduler states", load)

    def _load_scaler(self, checkpoint) -> None:
        self._loading(checkpoint, "gradient scaler state", super()._load_scaler)

    def _load_rng_state(self, checkpoint) -> None:
        self._loading(checkpoint, "random number generator states", super()._load_rng_state)

    def _issue_warnings_after_load(self, load_result) -> None:
        """The parent's warnings, less the tied weights that ``save_pretrained`` leaves out
        (they share their source's tensor, which was loaded); other missing keys still warn."""
        from ..loading import unwrap_peft

        model = unwrap_peft(self.model)
        tied = [k for k in load_result.missing_keys if _tied_and_shared(model, k)]
        if tied:
            logger.debug("Not in the checkpoint, as expected (tied weights): %s", tied)
            missing = [k for k in load_result.missing_keys if k not in tied]
            load_result = load_result._replace(missing_keys=missing)
        super()._issue_warnings_after_load(load_result)
