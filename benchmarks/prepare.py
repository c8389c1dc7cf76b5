"""Benchmark ``prepare``: DailyDialog train to training features, ours against the seed's method.

Cases, each run in a fresh process (timed from after the imports and the tokenizer load, which
both paths share, to the features being ready), interleaved, medians of ``--repeats``:

- ``seed first``: the seed's data script and a training start (:mod:`benchmarks.seed_baseline`:
  per-utterance ``tokenize`` + a per-token Python pass + ``convert_tokens_to_ids``, ids dumped
  to JSON, then loaded and one example per ``<sp2>`` turn built in a Python loop);
- ``seed repeated``: what the seed repeats at every training start (JSON load + examples);
- ``ours first``: ``load_dialogues`` + ``prepare_dataset`` with an empty cache;
- ``ours repeated``: the same call again, served by the cache (checked: a run that re-renders
  is an error).

The data is ``dialogues_train.txt`` (``$GPT2CHAT_SHARED/data/dailydialog``) and the same file
replicated ``k`` times for each scale ``k`` of ``--scales``, written into a temporary data
folder that both paths read. Same model config for both: ``--max-turns`` 5, ``--max-len`` 1024
(GPT-2's context).

Run ``python -m benchmarks.prepare`` (``--help`` for the options). The last line printed is the
ratios (seed time / our time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _common as C

MODULE = "benchmarks.prepare"
CASES = ("seed first", "ours first", "seed repeated", "ours repeated")


# ------------------------------------------------------------------------------------------
# Data


def daily_dialog_file() -> Path:
    """The official DailyDialog train file in the shared folder."""
    return C.require_shared("data", "dailydialog", "train", "dialogues_train.txt")


def write_replicated_lines(
    src: Path, dest: Path, scale: int, limit: int | None = None, suffix: str = ""
) -> int:
    """Write the first ``limit`` lines of ``src`` (all by default) ``scale`` times to ``dest``.

    Returns the number of lines of one copy. ``suffix`` is unused by line formats; kept for a
    common signature with the other replicators.
    """
    with open(src, encoding="utf-8") as f:
        lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
    if limit is not None:
        lines = lines[:limit]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", encoding="utf-8") as f:
        for _ in range(scale):
            f.writelines(lines)
    return len(lines)


def make_data_dir(root: Path, scale: int, limit: int | None) -> Path:
    """``<root>/dailydialog-x<scale>/train/dialogues_train.txt``: the train file ``scale`` times."""
    data_dir = root / f"dailydialog-x{scale}"
    write_replicated_lines(
        daily_dialog_file(), data_dir / "train" / "dialogues_train.txt", scale, limit
    )
    return data_dir


# ------------------------------------------------------------------------------------------
# What one measurement runs (in a worker process, or in this one with --in-process)


def _tokenizer(seed_class: bool):
    from gpt2chat import add_speaker_tokens

    path = str(C.require_shared("assets", "gpt2-tokenizer"))
    if seed_class:  # the class the seed used; Rust-backed in transformers 5
        from transformers import GPT2Tokenizer

        tokenizer = GPT2Tokenizer.from_pretrained(path)
    else:
        from gpt2chat.tokens import load_tokenizer

        tokenizer = load_tokenizer(path)
    add_speaker_tokens(tokenizer)
    return tokenizer


def run_case(kind: str, opts: dict[str, Any], tokenizer=None) -> dict[str, Any]:
    """One measurement of ``kind`` (``seed-first``, ``seed-repeat`` or ``ours``)."""
    import time

    max_turns, max_len = opts["max_turns"], opts["max_len"]
    if kind.startswith("seed"):
        from . import seed_baseline as seed

        tokenizer = tokenizer or _tokenizer(seed_class=True)
        ids_file = Path(opts["out_dir"]) / "train_ids.json"
        if kind == "seed-first":
            data_file = Path(opts["data_dir"]) / "train" / "dialogues_train.txt"

            def step():
                dialogues = seed.read_daily_dialog(data_file)
                return seed.first_run(
                    dialogues, tokenizer, ids_file, max_turns=max_turns, max_len=max_len
                )

        else:
            ids = seed.SeedTokenIds.from_tokenizer(tokenizer)

            def step():
                return seed.repeated_run(ids_file, ids, max_turns=max_turns, max_len=max_len)

        seconds, examples = C.timed(step)
        return {"seconds": seconds, "examples": len(examples), "tokens": examples.num_tokens}

    import datasets

    from gpt2chat import load_dialogues, prepare_dataset

    datasets.disable_progress_bars()
    tokenizer = tokenizer or _tokenizer(seed_class=False)
    started = time.time()

    def step():
        dialogues = load_dialogues("daily_dialog", "train", data_dir=opts["data_dir"])
        return prepare_dataset(
            dialogues,
            tokenizer,
            max_turns=max_turns,
            max_len=max_len,
            num_proc=opts.get("num_proc"),
        )

    seconds, features = C.timed(step)
    files = [f["filename"] for f in features.cache_files]
    return {
        "seconds": seconds,
        "examples": len(features),
        "tokens": int(sum(features.with_format("arrow")["length"].to_numpy())),
        # served by the cache: every file behind the features existed before this run
        "cache_hit": bool(files) and all(os.path.getmtime(f) < started for f in files),
    }


def _worker(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("seed-first", "seed-repeat", "ours"))
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--max-turns", type=int, required=True)
    p.add_argument("--max-len", type=int, required=True)
    p.add_argument("--num-proc", type=int, default=None)
    a = p.parse_args(argv)
    C.worker_result(run_case(a.kind, vars(a)))


# ------------------------------------------------------------------------------------------
# The benchmark


def _case_runner(
    kind: str, opts: dict[str, Any], cache_dir: Callable[[int], Path], in_process: bool, tokenizers
) -> Callable[[int], dict[str, Any]]:
    def run(rep: int) -> dict[str, Any]:
        cache = cache_dir(rep)
        env = {"GPT2CHAT_CACHE": str(cache), "HF_DATASETS_CACHE": str(cache / "hf")}
        if in_process:
            old = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                tok = tokenizers["seed" if kind.startswith("seed") else "ours"]
                return run_case(kind, opts, tok)
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        args = [
            kind,
            "--data-dir",
            str(opts["data_dir"]),
            "--out-dir",
            str(opts["out_dir"]),
            "--max-turns",
            str(opts["max_turns"]),
            "--max-len",
            str(opts["max_len"]),
        ]
        if opts.get("num_proc"):
            args += ["--num-proc", str(opts["num_proc"])]
        return C.run_worker(MODULE, args, env=env)

    return run


def benchmark_scale(
    scale: int, workdir: Path, args: argparse.Namespace, tokenizers
) -> dict[str, C.Measurement]:
    """All four cases at one scale; checks that both paths make the same examples."""
    data_dir = make_data_dir(workdir, scale, args.limit)
    out_dir = workdir / f"seed-x{scale}"
    out_dir.mkdir(parents=True, exist_ok=True)
    warm_cache = workdir / f"cache-warm-x{scale}"
    opts = {
        "data_dir": data_dir,
        "out_dir": out_dir,
        "max_turns": args.max_turns,
        "max_len": args.max_len,
        "num_proc": args.num_proc,
    }

    def fresh_cache(rep: int) -> Path:
        path = workdir / f"cache-cold-x{scale}-{rep}"
        shutil.rmtree(path, ignore_errors=True)
        return path

    ip = args.in_process
    runners = {
        "seed first": _case_runner("seed-first", opts, lambda r: warm_cache, ip, tokenizers),
        "ours first": _case_runner("ours", opts, fresh_cache, ip, tokenizers),
        "seed repeated": _case_runner("seed-repeat", opts, lambda r: warm_cache, ip, tokenizers),
        "ours repeated": _case_runner("ours", opts, lambda r: warm_cache, ip, tokenizers),
    }
    # Warm-up, not measured: writes the seed's JSON and fills our cache for the repeated runs
    # (and brings the files into the page cache for every case alike).
    seed_warm = runners["seed first"](-1)
    ours_warm = runners["ours first"](-1)
    runners["ours repeated"](-1)
    if seed_warm["examples"] != ours_warm["examples"]:
        raise RuntimeError(
            f"x{scale}: the seed path made {seed_warm['examples']} examples, ours "
            f"{ours_warm['examples']}: they must agree (one per <sp2> reply that fits max_len)."
        )
    results = C.interleave({name: runners[name] for name in CASES}, args.repeats)
    for run in results["ours repeated"].runs:
        if not run["cache_hit"]:
            raise RuntimeError(f"x{scale}: a repeated run of ours re-rendered: no cache hit.")
    for run in results["ours first"].runs:
        if run["cache_hit"]:
            raise RuntimeError(f"x{scale}: a first run of ours found a cache: not a first run.")
    for rep in range(args.repeats):
        shutil.rmtree(workdir / f"cache-cold-x{scale}-{rep}", ignore_errors=True)
    return results


def report(all_results: dict[int, dict[str, C.Measurement]], args: argparse.Namespace) -> str:
    """The tables and, last, the line with the ratios."""
    rows = []
    for scale, res in all_results.items():
        for name in CASES:
            m = res[name]
            path, run = name.split(" ", 1)
            rows.append(
                [
                    f"x{scale}",
                    path,
                    run + (" (cache hit)" if name == "ours repeated" else ""),
                    m.median(),
                    m.spread(),
                    int(m.median("examples")),
                    m.median("peak_rss_mb") if m.runs and "peak_rss_mb" in m.runs[0] else "-",
                ]
            )
    table = C.format_table(
        ["data", "path", "run", "median s", "min-max s", "examples", "peak RSS MiB"], rows
    )
    ratio_rows, parts = [], []
    for scale, res in all_results.items():
        first = C.ratio(res["seed first"].median(), res["ours first"].median())
        again = C.ratio(res["seed repeated"].median(), res["ours repeated"].median())
        ratio_rows.append([f"x{scale}", f"{first:.2f}x", f"{again:.1f}x"])
        parts.append(f"x{scale} first {first:.2f}x, repeated {again:.1f}x")
    ratios = C.format_table(
        ["data", "first run: seed / ours", "repeated run: seed / ours"], ratio_rows
    )
    return "\n\n".join(
        [table, ratios, "ratio (seed time / our time, medians): " + "; ".join(parts)]
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        _worker(argv[1:])
        return 0
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.prepare", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--scales", default="1,10", help="replication factors (default 1,10)")
    p.add_argument("--repeats", type=int, default=5, help="measured runs per case (default 5)")
    p.add_argument("--limit", type=int, default=None, help="only the first N dialogues")
    p.add_argument("--max-turns", type=int, default=5)
    p.add_argument("--max-len", type=int, default=1024)
    p.add_argument("--num-proc", type=int, default=None, help="prepare_dataset's num_proc")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the cases in this process (fast, for tests; timings are not comparable)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the harness: --limit 200 --scales 1,2 --repeats 1",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.limit, args.scales, args.repeats = args.limit or 200, "1,2", 1
    scales = [int(s) for s in args.scales.split(",") if s.strip()]

    tokenizers = None
    if args.in_process:
        tokenizers = {"seed": _tokenizer(seed_class=True), "ours": _tokenizer(seed_class=False)}
    info = C.machine_info()
    own_workdir = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gpt2chat-bench-prepare-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = {s: benchmark_scale(s, workdir, args, tokenizers) for s in scales}
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    with open(daily_dialog_file(), encoding="utf-8") as f:
        n = args.limit or sum(1 for line in f if line.strip())
    print(
        f"prepare: DailyDialog train ({n:,} dialogues, replicated x{', x'.join(map(str, scales))})"
        f" -> training features; max_turns {args.max_turns}, max_len {args.max_len}, "
        f"num_proc {args.num_proc}; median of {args.repeats} interleaved runs, "
        + ("in this process" if args.in_process else "each in a fresh process")
    )
    print(C.format_machine(info))
    print()
    print(report(results, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
