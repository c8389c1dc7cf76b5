"""The demo's blind comparison: replies of two (or more) chat systems to the same openers,
shuffled into one sheet that names no system, and the judges' marks counted per system.

A *system* is a saved model folder with its chat settings, optionally overridden::

    NAME=PATH                    # the settings saved in PATH
    NAME=PATH:field=value,...    # with some ChatSettings fields changed

``generate`` writes ``sheet.json`` (items in a shuffled order: id, opener, reply; nothing
else) and ``key.json`` (which system wrote each item, its seed, whether the reply ended by
itself, i.e. before ``max_new_tokens``). Judges mark each item of the sheet, without the key:
``{"<id>": {"on_topic": 0|1, "fluent": 0|1}, ...}``. ``score`` counts the marks per system::

    python -m benchmarks.demo_blind generate --system a=gpt2chat-demo \\
        --system b=gemma-demo --seeds 3 --out blind/
    python -m benchmarks.demo_blind score --out blind/ judge1.json judge2.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

OPENERS = Path(__file__).with_name("demo_openers.txt")


def read_openers(path: Path = OPENERS) -> list[str]:
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _parse_system(spec: str) -> tuple[str, str, dict]:
    name, _, rest = spec.partition("=")
    path, _, overrides = rest.partition(":")
    if not name or not path:
        raise ValueError(f"--system {spec!r}: expected NAME=PATH[:field=value,...].")
    values = {}
    for item in filter(None, overrides.split(",")):
        key, _, value = item.partition("=")
        values[key.strip()] = json.loads(value) if value.strip() not in ("",) else None
    return name, path, values


def generate(systems: list[str], seeds: int, out: Path, openers: list[str], shuffle_seed: int):
    from gpt2chat import ChatSession

    items, key = [], {}
    for spec in systems:
        name, path, overrides = _parse_system(spec)
        for seed in range(1, seeds + 1):
            session = ChatSession.from_pretrained(path, device="cpu", seed=seed, **overrides)
            limit = session.max_new_tokens
            for opener in openers:
                session.reset()
                t0 = time.perf_counter()
                reply = session.send(opener)
                seconds = time.perf_counter() - t0
                ended = session.last_turn.generated_tokens < limit
                items.append((name, seed, opener, reply, ended, seconds))
                print(f"[{name} seed {seed}] {opener} -> {reply!r}", flush=True)
    random.Random(shuffle_seed).shuffle(items)
    sheet = []
    for i, (name, seed, opener, reply, ended, seconds) in enumerate(items, 1):
        sheet.append({"id": i, "opener": opener, "reply": reply})
        key[str(i)] = {"system": name, "seed": seed, "ended": ended, "seconds": round(seconds, 2)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "sheet.json").write_text(json.dumps(sheet, indent=1, ensure_ascii=False) + "\n")
    (out / "key.json").write_text(json.dumps(key, indent=1) + "\n")
    print(f"{len(sheet)} replies: {out / 'sheet.json'} (for the judges), {out / 'key.json'}")


def score(out: Path, judgements: list[Path]) -> dict:
    key = json.loads((out / "key.json").read_text())
    systems = sorted({v["system"] for v in key.values()})
    table = {}
    for s in systems:
        ids = [i for i, v in key.items() if v["system"] == s]
        row = {"replies": len(ids), "ended": sum(key[i]["ended"] for i in ids)}
        secs = sorted(key[i]["seconds"] for i in ids)
        row["median_seconds"] = secs[len(secs) // 2]
        for j, path in enumerate(judgements, 1):
            marks = json.loads(Path(path).read_text())
            missing = [i for i in ids if i not in marks]
            if missing:
                raise ValueError(f"{path}: no marks for items {missing[:5]}...")
            row[f"on_topic_j{j}"] = sum(int(marks[i]["on_topic"]) for i in ids)
            row[f"fluent_j{j}"] = sum(int(marks[i]["fluent"]) for i in ids)
        table[s] = row
    for s, row in table.items():
        print(s, json.dumps(row))
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate")
    gen.add_argument("--system", action="append", required=True)
    gen.add_argument("--seeds", type=int, default=3)
    gen.add_argument("--openers", type=Path, default=OPENERS)
    gen.add_argument("--shuffle_seed", type=int, default=0)
    gen.add_argument("--out", type=Path, required=True)
    sc = sub.add_parser("score")
    sc.add_argument("--out", type=Path, required=True)
    sc.add_argument("judgements", type=Path, nargs="+")
    opts = parser.parse_args(argv)
    if opts.command == "generate":
        generate(opts.system, opts.seeds, opts.out, read_openers(opts.openers), opts.shuffle_seed)
    else:
        score(opts.out, opts.judgements)


if __name__ == "__main__":
    main()
