"""Whether a model folder's weight files are whole, without loading them: the safetensors
header's declared size, a torch zip's end record, the shards a sharded index lists; and, around
a ``from_pretrained``, an error naming the damaged file instead of the loader's own.

Used by :mod:`gpt2chat.loading` (a clear error when a folder cannot load) and by
:mod:`gpt2chat.training.checkpoints` (which checkpoint is complete).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["explained_load_failure", "file_problem", "load_failure", "weights_problems"]

#: Full-model weights, sharded-weights indexes, adapter weights: one of them must be there.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors",
                "adapter_model.bin")  # fmt: skip
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _safetensors_problem(path: Path) -> str | None:
    """Why a ``.safetensors`` file is not whole (its header declares the data size), else None."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError
            header = json.loads(f.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"),
                  default=0)  # fmt: skip
    except (struct.error, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return f"{path.name} is damaged (no valid safetensors header)"
    expected = 8 + header_len + end
    if size < expected:
        return f"{path.name} is truncated ({size} of {expected} bytes)"
    return None


def file_problem(path: Path) -> str | None:
    """Why a weights or state file is not whole, from its header or end record, else None."""
    if path.suffix == ".safetensors":
        return _safetensors_problem(path)
    if path.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(path):
        return f"{path.name} is truncated or damaged"  # torch.save's zip lost its end record
    return None


def weights_problems(folder: Path, names: set[str]) -> list[str]:
    if any(n.startswith(("pytorch_model_fsdp", "global_step")) for n in names):
        return []  # FSDP / DeepSpeed states: their own formats, loaded by their own code
    problems = []
    for index in (n for n in INDEX_FILES if n in names):
        try:
            shards = set(json.loads((folder / index).read_text())["weight_map"].values())
        except (ValueError, KeyError, AttributeError):
            return [f"{index} is truncated or damaged"]
        problems += [f"no {s}" for s in sorted(shards - names)]
        problems += [p for s in sorted(shards & names) if (p := file_problem(folder / s))]
    weights = [n for n in WEIGHT_FILES if n in names]
    if not weights and not any(n in names for n in INDEX_FILES):
        return ["no model weights (model.safetensors or adapter_model.safetensors)"]
    problems += [p for n in weights if (p := file_problem(folder / n))]
    adapter = any(n.startswith("adapter_model") for n in weights)
    config = "adapter_config.json" if adapter else "config.json"
    return problems + ([] if config in names else [f"no {config}"])


def load_failure(name: str | os.PathLike, err: BaseException) -> ValueError | None:
    """When loading the model folder ``name`` failed with ``err`` because a weights file is cut
    short or damaged (``SafetensorError``, a torch zip without its end record...), a
    ``ValueError`` naming the folder and the file; else ``None`` (the error is another one)."""
    folder = Path(name)
    if not folder.is_dir():
        return None
    names = {p.name for p in folder.iterdir()}
    problems = [p for p in weights_problems(folder, names) if not p.startswith("no ")]
    if not problems:
        return None
    return ValueError(
        f"{folder}: {'; '.join(problems)}, so the model cannot be loaded "
        f"({type(err).__name__}). Save it again, or use an earlier checkpoint."
    )


@contextmanager
def explained_load_failure(name: str | os.PathLike) -> Iterator[None]:
    """Around a ``from_pretrained`` of the folder ``name``: a failure caused by a damaged
    weights file is re-raised as :func:`load_failure`'s ``ValueError``; others as they are."""
    try:
        yield
    except Exception as err:
        failure = load_failure(name, err)
        if failure is None:
            raise
        raise failure from err
