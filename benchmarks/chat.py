"""Chat decoding speed: the original recipe's sampling loop vs :class:`gpt2chat.ChatSession`.

Run ``.venv/bin/python -m benchmarks.chat`` (``--quick`` for a tiny smoke run). It prints

* tokens/s of a reply at a ~200-token context on the GPT-2 124M architecture (random weights):
  the seed's loop (the whole sequence recomputed for every new token, no KV cache, top-p with
  softmax / sort / cumsum) and ``ChatSession`` (``model.generate`` with its KV cache) in a few
  settings (dynamic / static cache, LM-head re-layout on / off, fp32 / bf16), each also as a
  share of the memory-bandwidth bound (weight bytes read per token / measured copy bandwidth);
* the time to the first token at turns 1, 5 and 10 of a scripted conversation with
  ``max_turns=20`` (the window does not slide, so the prefix cache works), with and without it;
* last, one line: the ratio of ChatSession's tokens/s (default settings) to the seed loop's.

Runs are interleaved (every setting once per round) and the median of the rounds is reported:
the machine may be shared, and a slow round then hits every setting alike.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPT2CHAT_SHARED", REPO.parent / "shared"))

USER_TURNS = [
    "Hi there! How are you doing today?",
    "I just came back from a long walk along the river.",
    "The weather was lovely, sunny but not too warm.",
    "Do you like walking, or do you prefer to ride a bike?",
    "I think I will cook some pasta tonight with fresh tomatoes.",
    "My sister is visiting next week, and I need to clean the flat.",
    "She lives in Lisbon and works as an architect there.",
    "Have you ever been to Portugal? The food is wonderful.",
    "I would love to go back in the autumn when it is quieter.",
    "Anyway, what are your plans for the weekend?",
]
FILLER = "We talked about the weather, the trains, the new bakery on the corner and the football."


# --------------------------------------------------------------------------- the baseline
@torch.no_grad()
def seed_sampling_loop(
    model,
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
    *,
    sp2_id: int,
    top_p: float,
    n_new: int,
) -> list[int]:
    """The original recipe's nucleus sampling: no KV cache, the whole sequence recomputed (with
    the logits of every position) for every new token; top-p by softmax / sort / cumsum. Always
    generates ``n_new`` tokens (as a benchmark must)."""
    output = []
    for _ in range(n_new):
        logits = model(input_ids=input_ids, token_type_ids=token_type_ids)[0][:, -1]
        probs = F.softmax(logits, dim=-1)
        sorted_probs, sorted_idxs = torch.sort(probs, descending=True)
        cumsum_probs = torch.cumsum(sorted_probs, dim=-1)
        idx_remove = cumsum_probs > top_p
        idx_remove[:, 1:] = idx_remove[:, :-1].clone()
        idx_remove[:, 0] = False
        sorted_probs[idx_remove] = 0.0
        sorted_probs /= torch.sum(sorted_probs, dim=-1, keepdim=True)
        probs = torch.zeros_like(probs).scatter_(-1, sorted_idxs, sorted_probs)
        idx = torch.multinomial(probs, 1)
        output.append(idx.item())
        input_ids = torch.cat((input_ids, idx), dim=-1)
        next_type = torch.full_like(idx, sp2_id)
        token_type_ids = torch.cat((token_type_ids, next_type), dim=-1)
    return output


# --------------------------------------------------------------------------- measurements
def copy_bandwidth(n_bytes: int, repeats: int) -> float:
    """STREAM-style copy bandwidth in bytes/s: (bytes read + bytes written) / time, median."""
    src = torch.ones(n_bytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * n_bytes / statistics.median(times)


def weight_bytes(model) -> int:
    """Bytes of the weights one decoding step reads (tied matrices counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


@dataclass
class Setting:
    name: str
    model: object
    session_options: dict = field(default_factory=dict)
    tok_s: list[float] = field(default_factory=list)
    decode_tok_s: list[float] = field(default_factory=list)


def fixed_length(session):
    """Make every reply exactly ``max_new_tokens`` long, as a speed benchmark needs: no stop ids
    (``min_new_tokens`` would do it too, but its logits processor costs time at every step)."""
    session.generation_config.eos_token_id = None
    return session


def build_history(tokenizer, target: int) -> list[dict]:
    """Alternating messages whose rendered prompt (with the last user turn) is nearest ``target``
    tokens."""
    from gpt2chat import render_messages

    user = {"role": "user", "content": USER_TURNS[-1]}
    best: list[dict] = []
    best_gap = abs(len(render_messages([user], tokenizer)["input_ids"]) - target)
    history: list[dict] = []
    while True:
        role = "assistant" if len(history) % 2 == 0 else "user"  # ends with the bot's turn
        history = [{"role": role, "content": FILLER}, *history]
        length = len(render_messages([*history, user], tokenizer)["input_ids"])
        gap = abs(length - target)
        if gap < best_gap:
            best, best_gap = list(history), gap
        if length > target:
            return best


def measure_throughput(args, model, tokenizer) -> tuple[list[Setting], dict]:
    from gpt2chat import ChatSession, get_speaker_tokens, render_messages

    tokens = get_speaker_tokens(tokenizer)
    history = build_history(tokenizer, args.context)
    fixed = {
        "max_turns": 64,
        "prefix_cache": False,  # every run does the same work: a fresh ~200-token prompt
        "max_new_tokens": args.new_tokens,
        "top_p": 0.8,
        "seed": 0,
    }
    # The sessions get their own copy of the model, with the LM head re-laid as
    # ChatSession.from_pretrained does (fast_lm_head); the seed loop keeps the original.
    fast = copy.deepcopy(model)
    lm_head = {"fast_lm_head": True}
    settings = [
        Setting("ChatSession fp32 (default)", fast, lm_head),
        Setting("ChatSession fp32, fast_lm_head=False", model, {"fast_lm_head": False}),
        Setting("ChatSession fp32, static cache", fast, {"cache_implementation": "static"}),
    ]
    if args.bf16:
        bf16 = copy.deepcopy(model).to(torch.bfloat16)
        settings += [
            Setting("ChatSession bf16", bf16, lm_head),
            Setting("ChatSession bf16, static cache", bf16, {"cache_implementation": "static"}),
        ]
    if args.compile:
        settings.append(
            Setting("ChatSession fp32, static cache + torch.compile", fast, {"compile": True})
        )
    sessions = [
        fixed_length(ChatSession(s.model, tokenizer, **fixed, **s.session_options))
        for s in settings
    ]
    rendered = render_messages([*history, {"role": "user", "content": USER_TURNS[-1]}], tokenizer)
    ids = torch.tensor([rendered["input_ids"]])
    types = torch.tensor([rendered["token_type_ids"]])
    baseline_times: list[float] = []

    def run_baseline() -> float:
        start = time.perf_counter()
        seed_sampling_loop(
            model, ids, types, sp2_id=tokens.sp2_token_id, top_p=0.8, n_new=args.baseline_tokens
        )
        return time.perf_counter() - start

    def run_session(session) -> tuple[float, float]:
        session.history = history
        session.send(USER_TURNS[-1])
        stats = session.last_turn
        decode = stats.total_seconds - (stats.first_token_seconds or 0.0)
        return (
            stats.generated_tokens / stats.total_seconds,
            (stats.generated_tokens - 1) / decode if decode > 0 else float("nan"),
        )

    run_baseline()  # warm-up (allocations, lazy inits; compilation for the compiled setting)
    for session in sessions:
        run_session(session)
    for _ in range(args.repeats):
        baseline_times.append(run_baseline())
        for setting, session in zip(settings, sessions):
            tok_s, decode_tok_s = run_session(session)
            setting.tok_s.append(tok_s)
            setting.decode_tok_s.append(decode_tok_s)
    baseline = {
        "tok_s": args.baseline_tokens / statistics.median(baseline_times),
        "prompt_tokens": ids.shape[1],
    }
    return settings, baseline


def measure_ttft(args, model, tokenizer) -> dict[str, dict[int, float]]:
    """Median time to first token at each turn, with and without the prefix cache."""
    from gpt2chat import ChatSession

    options = {"max_turns": 20, "max_new_tokens": args.reply_tokens, "top_p": 0.8, "seed": 0}
    sessions = {
        "prefix cache": fixed_length(ChatSession(model, tokenizer, **options)),
        "no prefix cache": fixed_length(
            ChatSession(model, tokenizer, prefix_cache=False, **options)
        ),
    }
    turns = USER_TURNS[: max(args.turns)]
    samples: dict[str, dict[int, list[float]]] = {k: {t: [] for t in args.turns} for k in sessions}
    prompts: dict[int, int] = {}
    for session in sessions.values():  # warm-up conversation
        session.reset()
        session.send(turns[0])
    for _ in range(args.ttft_repeats):
        for name, session in sessions.items():
            session.reset()
            for i, text in enumerate(turns, start=1):
                session.send(text)
                if i in samples[name]:
                    samples[name][i].append(session.last_turn.first_token_seconds)
                    prompts[i] = session.last_turn.prompt_tokens
    result = {
        name: {t: statistics.median(v) for t, v in per_turn.items()}
        for name, per_turn in samples.items()
    }
    result["prompt tokens"] = prompts
    return result


# --------------------------------------------------------------------------- the report
def make_model(args, vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if args.quick:
        config = GPT2Config(vocab_size=vocab_size, n_positions=256, n_layer=2, n_head=2, n_embd=64)
    else:
        config = GPT2Config(vocab_size=vocab_size)  # the GPT-2 124M architecture
    return GPT2LMHeadModel(config).eval()


def load_tokenizer(path: str | None):
    from gpt2chat import add_speaker_tokens
    from gpt2chat.tokens import load_tokenizer as load

    folder = Path(path) if path else SHARED / "assets" / "gpt2-tokenizer"
    if not folder.exists():
        raise SystemExit(
            f"benchmarks.chat: no GPT-2 tokenizer at {folder}: pass --tokenizer or set "
            "GPT2CHAT_SHARED to the shared folder."
        )
    tokenizer = load(str(folder))
    add_speaker_tokens(tokenizer)
    return tokenizer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chat", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tiny model: a smoke run")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--context", type=int, default=200, help="prompt tokens")
    parser.add_argument("--new-tokens", type=int, default=32, help="reply tokens (ChatSession)")
    parser.add_argument("--baseline-tokens", type=int, default=8, help="tokens of the seed loop")
    parser.add_argument("--reply-tokens", type=int, default=20, help="reply tokens (TTFT)")
    parser.add_argument("--ttft-repeats", type=int, default=3, help="conversations (median)")
    parser.add_argument("--bf16", action="store_true", help="also measure bf16")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--tokenizer", default=None, help="GPT-2 tokenizer folder")
    args = parser.parse_args(argv)
    args.turns = [1, 5, 10]
    if args.quick:
        args.repeats = args.ttft_repeats = 1
        args.context, args.new_tokens, args.baseline_tokens, args.reply_tokens = 60, 4, 2, 4
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tokenizer = load_tokenizer(args.tokenizer)
    model = make_model(args, len(tokenizer))
    from gpt2chat import add_speaker_tokens

    add_speaker_tokens(tokenizer, model)
    bandwidth = copy_bandwidth((16 if args.quick else 256) * 2**20, max(3, args.repeats))
    settings, baseline = measure_throughput(args, model, tokenizer)
    ttft = measure_ttft(args, model, tokenizer)

    arch = "tiny GPT-2 (2x64)" if args.quick else "GPT-2 124M"
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"chat benchmark: {arch} random weights ({n_params:.0f}M parameters), CPU threads "
        f"{torch.get_num_threads()}, prompt {baseline['prompt_tokens']} tokens, "
        f"median of {args.repeats} interleaved rounds"
    )
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write)\n")
    header = f"{'decoding':<48} {'tok/s':>7} {'decode tok/s':>13} {'vs seed':>8} {'% of bound':>11}"
    print(header)
    print("-" * len(header))
    print(
        f"{'seed loop (no KV cache, recompute all), fp32':<48} {baseline['tok_s']:>7.2f} "
        f"{baseline['tok_s']:>13.2f} {'1.0x':>8} "
        f"{100 * baseline['tok_s'] / (bandwidth / weight_bytes(model)):>10.0f}%"
    )
    rows = []
    for s in settings:
        tok_s = statistics.median(s.tok_s)
        decode = statistics.median(s.decode_tok_s)
        bound = bandwidth / weight_bytes(s.model)
        rows.append({"name": s.name, "tok_s": tok_s, "decode_tok_s": decode, "bound": bound})
        print(
            f"{s.name:<48} {tok_s:>7.2f} {decode:>13.2f} {tok_s / baseline['tok_s']:>7.1f}x "
            f"{100 * decode / bound:>10.0f}%"
        )
    fp32_bound = bandwidth / weight_bytes(model)
    print(
        f"\nbandwidth bound (fp32): {fp32_bound:.1f} tok/s ({weight_bytes(model) / 1e6:.0f} MB/token)"
    )

    print(
        f"\ntime to first token, max_turns=20, {args.reply_tokens}-token replies "
        f"(median of {args.ttft_repeats} conversations, seconds)"
    )
    print(f"{'turn':>5} {'prompt':>7} {'prefix cache':>13} {'no prefix cache':>16}")
    for t in args.turns:
        print(
            f"{t:>5} {ttft['prompt tokens'][t]:>7} {ttft['prefix cache'][t]:>13.3f} "
            f"{ttft['no prefix cache'][t]:>16.3f}"
        )
    first, last = args.turns[0], args.turns[-1]
    growth = ttft["prefix cache"][last] / ttft["prefix cache"][first]
    growth_plain = ttft["no prefix cache"][last] / ttft["no prefix cache"][first]
    print(
        f"turn {last} / turn {first}: {growth:.2f}x with the prefix cache, {growth_plain:.2f}x "
        "without (goal <= 1.3x)\n"
    )
    default = rows[0]
    best = max(rows, key=lambda r: r["tok_s"])
    ratio = default["tok_s"] / baseline["tok_s"]
    best_part = (
        f", {best['tok_s'] / baseline['tok_s']:.1f}x with {best['name'].removeprefix('ChatSession ')}"
        if best is not default
        else ""
    )
    print(
        f"ratio: ChatSession {ratio:.1f}x the seed loop's tokens/s with its default settings "
        f"({default['tok_s']:.2f} vs {baseline['tok_s']:.2f} tok/s){best_part}"
    )
    return {
        "baseline": baseline,
        "settings": rows,
        "ttft": ttft,
        "bandwidth": bandwidth,
        "ratio": ratio,
        "ttft_growth": growth,
    }


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
