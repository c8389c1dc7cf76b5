"""Benchmark ``memory``: peak RSS of preparing every local dataset at once, ours and the seed's.

Every local dataset: DailyDialog (train, validation, test), EmpatheticDialogues (validation,
test), Persona-Chat (validation) from ``$GPT2CHAT_SHARED/data``, and the Chit-Chat corpus of
the ``chitchat-dataset`` package (train, validation, test). For each scale ``k`` of
``--scales`` every file is replicated ``k`` times into a temporary data folder (conversation
ids made unique per copy), so the 10x row shows how the peak grows with the data.

Cases, each in a fresh process whose peak RSS (``ru_maxrss``) is reported, interleaved, medians
of ``--repeats``:

- ``seed``: the seed's method (:mod:`benchmarks.seed_baseline`) on every split: utterances as
  Python lists, per-utterance tokenisation, ids dumped to JSON, loaded back and examples built
  as Python lists, every split kept in memory (the seed trains with train and valid loaded);
- ``ours first``: for each split, ``load_dialogues`` of all the datasets that have it, then
  ``prepare_dataset``, every split's result kept, with an empty cache;
- ``ours repeated``: the same with the cache filled.

``floor`` is the RSS of a worker that only imported the libraries and loaded the tokenizer: what
any run pays before touching data. ``peak anon RSS`` is the largest anonymous part of the RSS
(Python objects, Arrow buffers) seen by a sampling thread; the rest of the peak RSS is pages of
memory-mapped Arrow files, which the kernel shares with the page cache and reclaims first. Run ``python -m benchmarks.memory`` (``--help``); the last
line printed is the ratio of the peaks (seed / ours) and our growth from x1 to the largest scale.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import _common as C
from .prepare import write_replicated_lines

MODULE = "benchmarks.memory"
CASES = ("seed", "ours first", "ours repeated")
#: Every local dataset: name -> the splits it has here.
SPLITS = {
    "daily_dialog": ("train", "validation", "test"),
    "empathetic_dialogues": ("validation", "test"),
    "persona_chat": ("validation",),
    "chitchat": ("train", "validation", "test"),
}
#: The data folder name of each dataset (under ``$GPT2CHAT_SHARED/data`` and our copies).
FOLDERS = {
    "daily_dialog": "dailydialog",
    "empathetic_dialogues": "empathetic_dialogues",
    "persona_chat": "persona_chat",
    "chitchat": "chitchat",
}


# ------------------------------------------------------------------------------------------
# Data


def chitchat_file() -> Path:
    """``dataset.json`` of the installed ``chitchat-dataset`` package."""
    import importlib.util

    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the chitchat-dataset package is not installed (pip install it)")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset.json"


def _replicate_csv(src: Path, dest: Path, scale: int, limit: int | None) -> None:
    """EmpatheticDialogues CSV ``scale`` times; copy ``k`` > 0 gets ``conv_id`` + ``_x<k>``."""
    with open(src, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    if limit is not None:
        keep = list(dict.fromkeys(r[0] for r in body if r))[:limit]
        wanted = set(keep)
        body = [r for r in body if r and r[0] in wanted]
    conv = header.index("conv_id")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(header)
        for k in range(scale):
            for r in body:
                if k and len(r) > conv:
                    r = [*r[:conv], f"{r[conv]}_x{k}", *r[conv + 1 :]]
                w.writerow(r)


def _replicate_persona_chat(src: Path, dest: Path, scale: int, limit: int | None) -> None:
    """Persona-Chat's text file ``scale`` times (dialogues restart at line number 1)."""
    with open(src, encoding="utf-8") as f:
        lines = f.readlines()
    if limit is not None:
        starts = [i for i, line in enumerate(lines) if line.startswith("1 ")]
        if len(starts) > limit:
            lines = lines[: starts[limit]]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", encoding="utf-8") as f:
        for _ in range(scale):
            f.writelines(lines)


def _replicate_chitchat(src: Path, dest: Path, scale: int, limit: int | None) -> None:
    """Chit-Chat ``dataset.json`` ``scale`` times; copy ``k`` > 0 gets ids + ``_x<k>``. With a
    ``limit``, the first ``limit`` conversations of each split (by id, as the loader splits), so
    that no split is empty (an empty split is an error)."""
    from collections import Counter

    from gpt2chat.data.chitchat import _json_object_items, split_of  # streams the 40 MB file

    items, per_split = [], Counter()
    for conv_id, conv in _json_object_items(src):
        if limit is not None:
            split = split_of(conv_id)
            if per_split[split] >= limit:
                if min(per_split[s] for s in SPLITS["chitchat"]) >= limit:
                    break
                continue
            per_split[split] += 1
        items.append((conv_id, conv))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", encoding="utf-8") as f:
        f.write("{")
        first = True
        for k in range(scale):
            for conv_id, conv in items:
                key = conv_id if k == 0 else f"{conv_id}_x{k}"
                f.write(("" if first else ",") + json.dumps(key) + ":" + json.dumps(conv))
                first = False
        f.write("}")


def make_data_root(root: Path, scale: int, limit: int | None) -> Path:
    """Every local dataset replicated ``scale`` times under ``<root>/data-x<scale>/<folder>``."""
    data = root / f"data-x{scale}"
    shared = C.require_shared("data")
    for split in SPLITS["daily_dialog"]:
        name = f"dialogues_{split}.txt"
        write_replicated_lines(
            shared / "dailydialog" / split / name, data / "dailydialog" / split / name, scale, limit
        )
    for name in ("valid.csv", "test.csv"):
        _replicate_csv(
            shared / "empathetic_dialogues" / name,
            data / "empathetic_dialogues" / name,
            scale,
            limit,
        )
    pc = "valid_self_original_no_cands.txt"
    _replicate_persona_chat(shared / "persona_chat" / pc, data / "persona_chat" / pc, scale, limit)
    _replicate_chitchat(chitchat_file(), data / "chitchat" / "dataset.json", scale, limit)
    return data


# ------------------------------------------------------------------------------------------
# What one measurement runs


@functools.lru_cache(maxsize=2)
def _tokenizer(seed_class: bool):
    """The extended GPT-2 tokenizer (the seed's class, or ours); once per process."""
    from gpt2chat import add_speaker_tokens

    path = str(C.require_shared("assets", "gpt2-tokenizer"))
    if seed_class:
        from transformers import GPT2Tokenizer

        tokenizer = GPT2Tokenizer.from_pretrained(path)
    else:
        from gpt2chat.tokens import load_tokenizer

        tokenizer = load_tokenizer(path)
    add_speaker_tokens(tokenizer)
    return tokenizer


def _names_for(split: str) -> list[str]:
    return [name for name, splits in SPLITS.items() if split in splits]


def run_case(kind: str, opts: dict[str, Any]) -> dict[str, Any]:
    """One measurement (in a fresh worker process): ``floor``, ``seed`` or ``ours``."""
    data = Path(opts["data_dir"])
    max_turns, max_len = opts["max_turns"], opts["max_len"]
    if kind == "seed":
        from . import seed_baseline as seed
    else:
        import datasets

        from gpt2chat import load_dialogues, prepare_dataset

        datasets.disable_progress_bars()
    tokenizer = _tokenizer(seed_class=kind == "seed")
    floor = C.current_rss_mb()
    kept: list[Any] = []
    examples = 0

    def step() -> None:
        nonlocal examples
        for split in ("train", "validation", "test"):
            names = _names_for(split)
            if kind == "seed":
                dialogues = _seed_dialogues(names, split, data)
                out = Path(opts["out_dir"]) / f"{split}_ids.json"
                ex = seed.first_run(dialogues, tokenizer, out, max_turns=max_turns, max_len=max_len)
                kept.append((dialogues, ex))
                examples += len(ex)
            elif kind == "ours":
                dlg = load_dialogues(names, split, data_dir=[data / FOLDERS[n] for n in names])
                feats = prepare_dataset(
                    dlg, tokenizer, max_turns=max_turns, max_len=max_len, num_proc=opts["num_proc"]
                )
                kept.append((dlg, feats))
                examples += len(feats)

    with C.RssSampler() as sampler:
        seconds, _ = C.timed(step)
    return {
        "seconds": seconds,
        "examples": examples,
        "floor_rss_mb": round(floor, 1),
        "peak_anon_mb": round(sampler.peak_anon_mb, 1),
    }


def _seed_dialogues(names: list[str], split: str, data: Path) -> list[list[str]]:
    """Every dataset's raw utterances for ``split`` as Python lists, as the seed held them."""
    from . import seed_baseline as seed

    dialogues: list[list[str]] = []
    for name in names:
        if name == "daily_dialog":
            dialogues += seed.read_daily_dialog(
                data / "dailydialog" / split / f"dialogues_{split}.txt"
            )
        else:  # the seed read these through the datasets library into Python lists
            import datasets

            from gpt2chat import load_dialogues

            with _no_cache(datasets):
                ds = load_dialogues(name, split, data_dir=data / FOLDERS[name], normalize=False)
            dialogues += ds.data.column("utterances").to_pylist()
    return dialogues


class _environ:  # noqa: N801 - used as a context manager
    """Environment variables set inside the block."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __enter__(self) -> None:
        self.old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)

    def __exit__(self, *exc: object) -> None:
        for k, v in self.old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _no_cache:  # noqa: N801 - used as a context manager
    """``datasets`` caching off inside the block (the seed had no Arrow cache of its own)."""

    def __init__(self, datasets_module) -> None:
        self.datasets = datasets_module

    def __enter__(self) -> None:
        self.was = self.datasets.is_caching_enabled()
        self.datasets.disable_caching()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            self.datasets.enable_caching()


def _worker(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("seed", "ours", "floor"))
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--max-turns", type=int, required=True)
    p.add_argument("--max-len", type=int, required=True)
    p.add_argument("--num-proc", type=int, default=None)
    a = p.parse_args(argv)
    C.worker_result(run_case(a.kind, vars(a)))


# ------------------------------------------------------------------------------------------
# The benchmark


def benchmark_scale(
    scale: int, workdir: Path, args: argparse.Namespace
) -> dict[str, C.Measurement]:
    data = make_data_root(workdir, scale, args.limit)
    out_dir = workdir / f"seed-x{scale}"
    out_dir.mkdir(parents=True, exist_ok=True)
    warm = workdir / f"cache-warm-x{scale}"
    base = [
        "--data-dir",
        str(data),
        "--out-dir",
        str(out_dir),
        "--max-turns",
        str(args.max_turns),
        "--max-len",
        str(args.max_len),
    ]
    if args.num_proc:
        base += ["--num-proc", str(args.num_proc)]

    opts = {
        "data_dir": data,
        "out_dir": out_dir,
        "max_turns": args.max_turns,
        "max_len": args.max_len,
        "num_proc": args.num_proc,
    }

    def runner(kind: str, cold: bool):
        def run(rep: int) -> dict[str, Any]:
            cache = workdir / f"cache-cold-x{scale}-{rep}" if cold else warm
            if cold:
                shutil.rmtree(cache, ignore_errors=True)
            env = {"GPT2CHAT_CACHE": str(cache), "HF_DATASETS_CACHE": str(cache / "hf")}
            try:
                if args.in_process:
                    with _environ(env):
                        return {**run_case(kind, opts), "peak_rss_mb": C.peak_rss_mb()}
                return C.run_worker(MODULE, [kind, *base], env=env)
            finally:
                if cold:
                    shutil.rmtree(cache, ignore_errors=True)

        return run

    runner("ours", cold=False)(-1)  # fills the cache of the repeated runs
    cases = {
        "floor": runner("floor", cold=True),
        "seed": runner("seed", cold=True),
        "ours first": runner("ours", cold=True),
        "ours repeated": runner("ours", cold=False),
    }
    results = C.interleave(cases, args.repeats)
    counts = {name: {r["examples"] for r in results[name].runs} for name in CASES}
    ours = counts["ours first"] | counts["ours repeated"]
    # The seed tokenises the raw text and we the normalised text, so a reply close to max_len
    # may fit in one and not the other: the counts may differ by a few examples, no more.
    if len(ours) != 1 or len(counts["seed"]) != 1:
        raise RuntimeError(f"x{scale}: runs of one case made different examples: {counts}")
    (n_ours,), (n_seed,) = ours, counts["seed"]
    if abs(n_seed - n_ours) > max(2, n_ours // 1000) * scale:
        raise RuntimeError(f"x{scale}: the seed made {n_seed} examples, ours {n_ours}.")
    return results


def report(all_results: dict[int, dict[str, C.Measurement]]) -> str:
    rows = []
    for scale, res in all_results.items():
        floor = res["floor"].median("peak_rss_mb")
        for name in ("floor", *CASES):
            m = res[name]
            peak = m.median("peak_rss_mb")
            rows.append(
                [
                    f"x{scale}",
                    name,
                    peak,
                    peak - floor if name != "floor" else 0.0,
                    m.median("peak_anon_mb"),
                    m.median("seconds") if name != "floor" else float("nan"),
                    int(m.median("examples")),
                ]
            )
    table = C.format_table(
        [
            "data",
            "case",
            "peak RSS MiB",
            "above floor MiB",
            "peak anon RSS MiB",
            "median s",
            "examples",
        ],
        rows,
    )
    scales = list(all_results)
    first, last = all_results[scales[0]], all_results[scales[-1]]
    parts = []
    for scale, res in all_results.items():
        r = C.ratio(res["seed"].median("peak_rss_mb"), res["ours first"].median("peak_rss_mb"))
        parts.append(f"x{scale} {r:.2f}x")
    line = "ratio (seed peak RSS / our peak RSS, first run, medians): " + "; ".join(parts)
    if len(scales) > 1:
        growth = C.ratio(
            last["ours first"].median("peak_rss_mb"), first["ours first"].median("peak_rss_mb")
        )
        seed_growth = C.ratio(
            last["seed"].median("peak_rss_mb"), first["seed"].median("peak_rss_mb")
        )
        line += (
            f"; peak growth x{scales[0]} -> x{scales[-1]}: ours {growth:.2f}x, "
            f"seed {seed_growth:.2f}x"
        )
    return f"{table}\n\n{line}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        _worker(argv[1:])
        return 0
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--scales", default="1,10", help="replication factors (default 1,10)")
    p.add_argument("--repeats", type=int, default=3, help="measured runs per case (default 3)")
    p.add_argument("--limit", type=int, default=None, help="only the first N dialogues per file")
    p.add_argument("--max-turns", type=int, default=5)
    p.add_argument("--max-len", type=int, default=1024)
    p.add_argument("--num-proc", type=int, default=None, help="prepare_dataset's num_proc")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the cases in this process (fast, for tests; the RSS numbers mean nothing)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the harness: --limit 20 --scales 1,2 --repeats 1",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.limit, args.scales, args.repeats = args.limit or 20, "1,2", 1
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    info = C.machine_info()
    own = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gpt2chat-bench-memory-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = {s: benchmark_scale(s, workdir, args) for s in scales}
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        "memory: every local dataset (DailyDialog train/validation/test, EmpatheticDialogues "
        "validation/test, Persona-Chat validation, Chit-Chat train/validation/test"
        + (f", first {args.limit} dialogues per file" if args.limit else "")
        + f") prepared at once, replicated x{', x'.join(map(str, scales))}; max_turns "
        f"{args.max_turns}, max_len {args.max_len}, num_proc {args.num_proc}; peak RSS of a fresh "
        f"process per run, median of {args.repeats} interleaved runs"
    )
    print(C.format_machine(info))
    print()
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
