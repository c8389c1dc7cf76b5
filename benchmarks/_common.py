"""Helpers shared by the benchmarks: paths, fresh-process workers, interleaved runs, tables.

Every benchmark measures each case in a fresh Python process (a *worker*: the benchmark's own
module run with ``--worker``), so that no cache of a previous measurement (module state, the
tokenizer's, the allocator's) helps the next one and the peak RSS is the case's own. Cases are
run round-robin (:func:`interleave`), so background load on a shared machine hits every case
alike, and reported as medians.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "REPO",
    "Measurement",
    "RssSampler",
    "current_rss_mb",
    "format_machine",
    "format_table",
    "interleave",
    "machine_info",
    "median",
    "peak_rss_mb",
    "ratio",
    "require_shared",
    "rss_parts_mb",
    "run_worker",
    "shared_dir",
    "timed",
    "worker_result",
]

REPO = Path(__file__).resolve().parents[1]
#: Prefix of the line a worker prints its result on (JSON), read by :func:`run_worker`.
RESULT_PREFIX = "BENCHMARK-RESULT "


def shared_dir() -> Path:
    """The shared data folder: ``$GPT2CHAT_SHARED``, else ``../shared`` beside the checkout."""
    return Path(os.environ.get("GPT2CHAT_SHARED") or REPO.parent / "shared")


def require_shared(*parts: str) -> Path:
    """A path under :func:`shared_dir`; exit with a message naming it when it is absent."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        raise SystemExit(
            f"{path} is absent: set GPT2CHAT_SHARED to the shared folder (with data/ and "
            "assets/gpt2-tokenizer/)."
        )
    return path


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (``ru_maxrss``, KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def current_rss_mb() -> float:
    """This process's resident set size now, in MiB (``/proc``; peak RSS where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def rss_parts_mb() -> dict[str, float]:
    """This process's resident memory now, split as Linux reports it (MiB): ``anon`` (heap:
    Python objects, Arrow buffers) and ``file`` (pages of mapped files, e.g. memory-mapped
    Arrow files: shared with the page cache, and dropped first under memory pressure)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssFile:")):
                    out[line[3:7].lower()] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


class RssSampler:
    """Samples :func:`rss_parts_mb` in a thread while the block runs; ``peak_anon_mb`` is the
    largest anonymous RSS seen (``ru_maxrss`` gives only the peak of the total)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_anon_mb = 0.0

    def _sample(self) -> None:
        self.peak_anon_mb = max(self.peak_anon_mb, rss_parts_mb().get("anon", 0.0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        import threading

        self._stop = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, fn())`` with a monotonic high-resolution clock."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def worker_result(result: Mapping[str, Any]) -> None:
    """Print a worker's result on the line :func:`run_worker` reads (the peak RSS is added)."""
    print(RESULT_PREFIX + json.dumps({**result, "peak_rss_mb": round(peak_rss_mb(), 1)}))
    sys.stdout.flush()


def run_worker(
    module: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``python -m <module> --worker <args>`` in a fresh process and return its result.

    ``env`` entries are added to this process's environment. A failing worker raises
    ``RuntimeError`` with the end of its output.
    """
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.run(
        [sys.executable, "-m", module, "--worker", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            if proc.returncode == 0:
                return json.loads(line[len(RESULT_PREFIX) :])
            break
    tail = (proc.stdout + proc.stderr)[-3000:]
    raise RuntimeError(f"worker {module} {' '.join(args)} failed ({proc.returncode}):\n{tail}")


@dataclass
class Measurement:
    """The repetitions of one case: each a worker's result dict (with ``seconds``)."""

    name: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    def values(self, key: str = "seconds") -> list[float]:
        return [float(r[key]) for r in self.runs]

    def median(self, key: str = "seconds") -> float:
        return median(self.values(key))

    def spread(self, key: str = "seconds") -> str:
        """``"min-max"`` of the repetitions."""
        v = self.values(key)
        return f"{min(v):.3g}-{max(v):.3g}" if v else "-"


def interleave(
    cases: Mapping[str, Callable[[int], dict[str, Any]]], repeats: int
) -> dict[str, Measurement]:
    """Run every case once per round for ``repeats`` rounds, rotating the order each round.

    ``cases[name](round)`` runs one repetition and returns its result. Interleaving spreads
    any drift in the machine's load over all cases instead of penalising the one that ran
    while another job was busy.
    """
    names = list(cases)
    out = {n: Measurement(n) for n in names}
    for r in range(repeats):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            out[name].runs.append(cases[name](r))
    return out


def median(values: Iterable[float]) -> float:
    vals = list(values)
    return statistics.median(vals) if vals else float("nan")


def ratio(baseline: float, ours: float) -> float:
    """How many times faster (or smaller) ours is: ``baseline / ours``."""
    return baseline / ours if ours > 0 else float("inf")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text (and Markdown) table: text columns left-aligned, number columns right."""
    rows = [list(r) for r in rows]
    numeric = [
        bool(rows) and all(isinstance(r[i], (int, float)) for r in rows)
        for i in range(len(headers))
    ]
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ]
        return "| " + " | ".join(parts) + " |"

    rule = "".join("|" + "-" * (w + 1) + (":" if numeric[i] else "-") for i, w in enumerate(widths))
    return "\n".join([line(cells[0]), rule + "|", *(line(r) for r in cells[1:])])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, RAM, load, library versions."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
    }
    for module in ("torch", "transformers", "tokenizers", "datasets", "pyarrow"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # pragma: no cover - a missing optional library
            info[module] = None
    return info


def format_machine(info: Mapping[str, Any]) -> str:
    libs = ", ".join(
        f"{k} {info[k]}" for k in ("torch", "transformers", "tokenizers", "datasets") if info[k]
    )
    return (
        f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, "
        f"load average {info['load_avg_1m']} at start; Python {info['python']}, {libs}"
    )


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None
