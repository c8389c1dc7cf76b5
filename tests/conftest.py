"""Fixtures of the whole suite.

Everything a test of a mechanism needs is made here or in :mod:`tests.fixtures`: a byte-level
BPE tokenizer in GPT-2's format trained at run time, DailyDialog-format files written from the
installed ``chitchat-dataset``, tiny random models. Only the tests whose subject is a real corpus
or the real GPT-2 vocabulary read ``$GPT2CHAT_SHARED`` (default ``../shared``); they carry the
``needs_shared`` marker with their reason and skip, saying so, where the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .fixtures import (
    TOKENIZER_VOCAB_SIZE,
    corpus_dir,
    load_tokenizer,
    standin_shared_dir,
    tokenizer_dir,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPT2CHAT_SHARED", REPO.parent / "shared"))
#: The real GPT-2 tokenizer files (``needs_shared`` tests only).
GPT2_TOKENIZER_DIR = SHARED / "assets" / "gpt2-tokenizer"
#: The real corpora (``needs_shared`` tests only).
SHARED_DATA_DIR = SHARED / "data"


def _hypothesis_profiles() -> None:
    """Property-based tests: no per-example deadline (a loaded CI machine is slow), and a fixed
    sequence of examples so a run is reproducible; ``HYPOTHESIS_PROFILE=explore`` draws fresh
    random examples, more of them."""
    try:
        from hypothesis import settings
    except ImportError:  # installed with the dev extra
        return
    settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
    settings.register_profile("explore", deadline=None, max_examples=1000)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_hypothesis_profiles()


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs_shared(*parts, reason): the test's subject is a real corpus or the real GPT-2 "
        "vocabulary under $GPT2CHAT_SHARED; it skips with its reason when that path is absent",
    )


def pytest_runtest_setup(item):
    for marker in item.iter_markers("needs_shared"):
        path = SHARED.joinpath(*marker.args)
        if not path.exists():
            reason = marker.kwargs.get("reason", "uses the shared folder")
            pytest.skip(f"{reason}: needs {path} (set GPT2CHAT_SHARED to the shared folder)")


def _skip_share(reporter) -> tuple[int, int, float]:
    stats = reporter.stats
    counted = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")
    total = sum(len(stats.get(key, [])) for key in counted)
    skipped = len(stats.get("skipped", []))
    return skipped, total, 100.0 * skipped / max(total, 1)


def pytest_sessionfinish(session, exitstatus):
    """With ``GPT2CHAT_MAX_SKIP_PERCENT`` set (``make test-standalone``), more skipped tests than
    that share of the suite fails the run: the fresh-clone property cannot regress unseen."""
    limit = os.environ.get("GPT2CHAT_MAX_SKIP_PERCENT")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if limit and reporter is not None and _skip_share(reporter)[2] > float(limit):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    limit = os.environ.get("GPT2CHAT_MAX_SKIP_PERCENT")
    if limit:
        skipped, total, share = _skip_share(terminalreporter)
        verdict = "too many" if share > float(limit) else "ok"
        terminalreporter.write_line(
            f"fresh-clone check: {skipped} of {total} tests skipped ({share:.1f} %; "
            f"at most {limit} % allowed): {verdict}"
        )


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    """Loader caches (``GPT2CHAT_CACHE``) and the suite's own fixtures
    (``GPT2CHAT_TEST_FIXTURES``) go to temporary folders, inherited by subprocesses."""
    names = ("GPT2CHAT_CACHE", "GPT2CHAT_TEST_FIXTURES")
    old = {name: os.environ.get(name) for name in names}
    os.environ["GPT2CHAT_CACHE"] = str(tmp_path_factory.mktemp("gpt2chat-cache"))
    os.environ["GPT2CHAT_TEST_FIXTURES"] = str(tmp_path_factory.mktemp("fixtures"))
    yield
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def require_shared(*parts: str) -> Path:
    """Path under the shared folder, or skip the test with a reason when it is absent (for
    ``needs_shared`` tests that look up further paths)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (set GPT2CHAT_SHARED to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The suite's own root data folder (``dailydialog/{train,validation,test}/``)."""
    return corpus_dir()


@pytest.fixture
def standin_shared(monkeypatch) -> Path:
    """``$GPT2CHAT_SHARED`` pointed at the suite's tokenizer and corpus, laid out as the shared
    folder (for the code that reads that variable: the benchmarks' smoke runs)."""
    folder = standin_shared_dir()
    monkeypatch.setenv("GPT2CHAT_SHARED", str(folder))
    return folder


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    return require_shared("data")


@pytest.fixture
def gpt2_tokenizer():
    """A fresh byte-level BPE tokenizer in GPT-2's format (the suite's own, not extended)."""
    return load_tokenizer()


@pytest.fixture
def chat_tokenizer(gpt2_tokenizer):
    """The suite's GPT-2-format tokenizer extended with the speaker tokens."""
    from gpt2chat import add_speaker_tokens

    add_speaker_tokens(gpt2_tokenizer)
    return gpt2_tokenizer


@pytest.fixture
def real_gpt2_tokenizer():
    """The real GPT-2 tokenizer from the shared folder (``needs_shared`` tests only)."""
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(str(require_shared("assets", "gpt2-tokenizer")))


def tiny_gpt2(vocab_size: int = TOKENIZER_VOCAB_SIZE, n_positions: int = 256, seed: int = 0):
    """A tiny random GPT-2 (2 layers, 64 wide) for the suite's tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_layer=2, n_head=2, n_embd=64
    )
    return GPT2LMHeadModel(config)


@pytest.fixture
def tiny_model():
    return tiny_gpt2()


def save_tiny_lora_adapter(root: Path):
    """A plain tiny GPT-2 base folder (no speaker tokens) and an adapter folder holding LoRA
    weights, the trained speaker-token rows and the extended tokenizer, as LoRA training saves
    them. Returns ``(base_dir, adapter_dir, the in-memory adapter model, its tokenizer)``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from gpt2chat import add_speaker_tokens

    base_dir, adapter_dir = root / "base", root / "adapter"
    tiny_gpt2().save_pretrained(base_dir)
    load_tokenizer().save_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    tokenizer = load_tokenizer()
    tokens = add_speaker_tokens(tokenizer, model)
    config = LoraConfig(
        r=4,
        target_modules=["c_attn"],
        fan_in_fan_out=True,
        task_type="CAUSAL_LM",
        trainable_token_indices=[tokens.bos_token_id, tokens.sp1_token_id, tokens.sp2_token_id],
    )
    peft_model = get_peft_model(model, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in peft_model.parameters():
            if param.requires_grad:  # make the adapter matter: non-zero LoRA B, moved rows
                param.add_(torch.randn_like(param) * 0.05)
    peft_model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    return base_dir, adapter_dir, peft_model.eval(), tokenizer


__all__ = ["REPO", "SHARED", "corpus_dir", "load_tokenizer", "require_shared", "tokenizer_dir"]
