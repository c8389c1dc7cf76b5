"""ChatSettings: the settings saved with a model (the standard decoding fields in
generation_config.json, gpt2chat's own in chat_config.json), read by ChatSession.from_pretrained and
``gpt2chat chat`` (``serve``: tests/serve/test_api.py)."""

from __future__ import annotations

import io
import json
import sys

import pytest

from gpt2chat import ChatSession, ChatSettings
from gpt2chat.chat import CHAT_CONFIG_NAME
from gpt2chat.chat.settings import CHAT_FIELDS, GENERATION_FIELDS
from gpt2chat.cli import main

from .conftest import save_chat_folder

DEMO_LIKE = ChatSettings(
    max_turns=3,
    temperature=0.7,
    top_p=0.9,
    repetition_penalty=1.2,
    max_new_tokens=12,
    guidance_scale=1.3,
    num_candidates=3,
    mmi_weight=0.4,
    mmi_contexts=["Hi.", "Okay."],
)


@pytest.fixture(scope="module")
def plain_dir(model_dir):
    return model_dir


@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory):
    folder = save_chat_folder(tmp_path_factory.mktemp("with-chat-config"))
    DEMO_LIKE.save_pretrained(folder)
    return folder


SHOWN = set(GENERATION_FIELDS + CHAT_FIELDS) - {"top_k", "use_token_type_ids"}


def session_settings(chat: ChatSession) -> dict:
    config = chat.generation_config
    return {
        "max_turns": chat.max_turns,
        "do_sample": config.do_sample,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "repetition_penalty": config.repetition_penalty,
        "max_new_tokens": config.max_new_tokens,
        "guidance_scale": chat.guidance_scale,
        "num_candidates": chat.num_candidates,
        "mmi_weight": chat.mmi_weight,
        "mmi_contexts": chat.mmi_contexts,
    }


# --------------------------------------------------------------------------- the file
def test_save_and_load_round_trip(tmp_path):
    path = DEMO_LIKE.save_pretrained(tmp_path / "new-folder")
    assert path.name == CHAT_CONFIG_NAME
    data = json.loads(path.read_text())
    assert data["format"] == "gpt2chat-chat-config" and data["version"] == 2
    generation = json.loads((path.parent / "generation_config.json").read_text())
    assert generation["top_p"] == 0.9 and generation["repetition_penalty"] == 1.2
    assert generation["do_sample"] is True and generation["top_k"] == 0  # 0: off, written
    # One source of truth: each field in exactly one file, the standard ones where engines look.
    assert set(GENERATION_FIELDS) <= set(generation) and not set(GENERATION_FIELDS) & set(data)
    assert set(CHAT_FIELDS) == set(data) - {"format", "version"}
    assert not set(CHAT_FIELDS) & set(generation)
    assert ChatSettings.from_pretrained(path.parent) == DEMO_LIKE
    from transformers import GenerationConfig

    loaded = GenerationConfig.from_pretrained(path.parent)  # what transformers' generate uses
    assert (loaded.do_sample, loaded.top_p, loaded.temperature, loaded.max_new_tokens) == (
        True, 0.9, 0.7, 12
    )  # fmt: skip
    assert ChatSettings.from_pretrained(tmp_path) is None  # a folder without one
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert ChatSettings.from_pretrained(gguf) is None


def test_missing_keys_take_the_defaults(tmp_path):
    (tmp_path / CHAT_CONFIG_NAME).write_text(
        json.dumps({"format": "gpt2chat-chat-config", "version": 1, "max_turns": 3})
    )
    assert ChatSettings.from_pretrained(tmp_path) == ChatSettings(max_turns=3)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"max_turns": 3}), "not a gpt2chat chat config"),
        (json.dumps({"format": "gpt2chat-chat-config", "version": 9}), "version 9"),
        (
            json.dumps({"format": "gpt2chat-chat-config", "version": 1, "top_pp": 0.9}),
            "unknown chat setting.*top_pp",
        ),
        (
            json.dumps({"format": "gpt2chat-chat-config", "version": 1, "top_p": 1.5}),
            r"`top_p` must be in \(0, 1\], got 1.5",
        ),
        (
            json.dumps({"format": "gpt2chat-chat-config", "version": 1, "max_turns": "3"}),
            "`max_turns` must be an integer >= 2, got '3'",
        ),
        (
            json.dumps(
                {"format": "gpt2chat-chat-config", "version": 1, "do_sample": False,
                 "num_candidates": 4}
            ),
            "num_candidates",
        ),
    ],
)  # fmt: skip
def test_a_bad_file_is_named_in_the_error(tmp_path, content, match):
    path = tmp_path / CHAT_CONFIG_NAME
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        ChatSettings.from_pretrained(tmp_path)
    assert str(path) in str(err.value)


def test_greedy_settings_leave_the_sampling_fields_out(tmp_path):
    """transformers refuses to save sampling values under greedy decoding: they are left out,
    and read back as the defaults."""
    ChatSettings(do_sample=False, max_new_tokens=20).save_pretrained(tmp_path)
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation["do_sample"] is False and generation["max_new_tokens"] == 20
    assert not {"temperature", "top_p", "top_k"} & set(generation)
    assert ChatSettings.from_pretrained(tmp_path) == ChatSettings(
        do_sample=False, max_new_tokens=20
    )


def test_sampling_fields_are_unused_under_greedy_decoding(tmp_path):
    ChatSettings().save_pretrained(tmp_path)
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps({"do_sample": False, "temperature": 0.0, "top_k": 50}))
    assert ChatSettings.from_pretrained(tmp_path) == ChatSettings(do_sample=False)
    path.write_text(json.dumps({"do_sample": True}))  # absent: what generate uses
    loaded = ChatSettings.from_pretrained(tmp_path)
    assert (loaded.temperature, loaded.top_p, loaded.top_k) == (1.0, 1.0, 50)


def test_saving_keeps_the_folders_ids_and_sets_the_stop_ids(tmp_path):
    from transformers import GenerationConfig

    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2).save_pretrained(tmp_path)
    ChatSettings().save_pretrained(tmp_path)
    kept = json.loads((tmp_path / "generation_config.json").read_text())
    assert (kept["bos_token_id"], kept["eos_token_id"], kept["top_p"]) == (1, 2, 0.8)

    class Tokens:  # the fields save_pretrained reads from a SpeakerTokens
        reply_stop_ids, bos_token_id, pad_token_id = (7, 9), 8, 7

    ChatSettings().save_pretrained(tmp_path, tokens=Tokens())
    stops = json.loads((tmp_path / "generation_config.json").read_text())
    assert (stops["eos_token_id"], stops["bos_token_id"], stops["pad_token_id"]) == ([7, 9], 8, 7)


def test_a_version_1_file_with_every_field_is_still_read(tmp_path):
    (tmp_path / CHAT_CONFIG_NAME).write_text(
        json.dumps({"format": "gpt2chat-chat-config", "version": 1, "top_p": 0.6, "max_turns": 4})
    )
    assert ChatSettings.from_pretrained(tmp_path) == ChatSettings(top_p=0.6, max_turns=4)


@pytest.mark.parametrize(
    ("generation", "match"),
    [
        ({"do_sample": True, "top_p": 1.5}, r"`top_p` must be in \(0, 1\], got 1.5"),
        ({"do_sample": "yes"}, "`do_sample` must be true or false"),
        ([1, 2], "not a generation config"),
    ],
)
def test_a_bad_generation_config_is_named_in_the_error(tmp_path, generation, match):
    ChatSettings().save_pretrained(tmp_path)
    path = tmp_path / "generation_config.json"
    path.write_text(json.dumps(generation))
    with pytest.raises(ValueError, match=match) as err:
        ChatSettings.from_pretrained(tmp_path)
    assert str(path) in str(err.value)


def test_a_standard_field_in_chat_config_is_sent_to_generation_config(tmp_path):
    path = tmp_path / CHAT_CONFIG_NAME
    path.write_text(json.dumps({"format": "gpt2chat-chat-config", "version": 2, "top_p": 0.9}))
    with pytest.raises(ValueError, match=r"top_p belong.* in generation_config\.json") as err:
        ChatSettings.from_pretrained(tmp_path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"use_token_type_ids": "yes"}, "use_token_type_ids"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": 1e-40}, r"`temperature` must be >= 0\.001"),
        ({"num_candidates": 65}, "num_candidates"),
        ({"repetition_penalty": -1.0}, "repetition_penalty"),
        ({"mmi_weight": float("nan")}, "mmi_weight"),
        ({"mmi_contexts": "Hi."}, "mmi_contexts"),
        ({"mmi_contexts": []}, "mmi_contexts"),
    ],
)
def test_settings_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChatSettings(**kwargs)


def test_explicit_options_win_and_rule_out_what_they_conflict_with():
    assert DEMO_LIKE.under({"top_p": 0.5})["top_p"] == 0.5
    greedy = DEMO_LIKE.under({"do_sample": False})
    assert "num_candidates" not in greedy and "temperature" not in greedy
    assert greedy["guidance_scale"] == 1.3 and greedy["max_turns"] == 3
    beams = DEMO_LIKE.under({"do_sample": False, "num_beams": 2})
    assert "guidance_scale" not in beams and beams["num_beams"] == 2
    assert "num_candidates" not in DEMO_LIKE.under({"cache_implementation": "static"})
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=True, top_p=0.7)
    assert DEMO_LIKE.under({"generation_config": config}) == {
        "max_turns": 3,
        "generation_config": config,
    }


# --------------------------------------------------------------------------- ChatSession
def test_from_pretrained_decodes_with_the_saved_settings(tuned_dir, plain_dir):
    chat = ChatSession.from_pretrained(tuned_dir, device="cpu")
    assert session_settings(chat) == {k: v for k, v in DEMO_LIKE.to_dict().items() if k in SHOWN}
    plain = ChatSession.from_pretrained(plain_dir, device="cpu")
    assert session_settings(plain) == {
        k: v for k, v in ChatSettings().to_dict().items() if k in SHOWN
    }
    ignored = ChatSession.from_pretrained(tuned_dir, device="cpu", chat_config=False)
    assert session_settings(ignored) == session_settings(plain)


@pytest.mark.parametrize("recorded", [True, False])
def test_the_session_follows_the_token_type_record(tmp_path, recorded, caplog):
    """What training recorded decides whether token types are fed, with or without the saved
    decoding settings; explicit arguments still win."""
    folder = save_chat_folder(tmp_path / "model")
    ChatSettings(use_token_type_ids=recorded).save_pretrained(folder)
    with caplog.at_level("WARNING", logger="gpt2chat"):
        assert ChatSession.from_pretrained(folder, device="cpu").use_token_type_ids is recorded
        off = ChatSession.from_pretrained(folder, device="cpu", chat_config=False)
        assert off.use_token_type_ids is recorded
        chat = ChatSession.from_pretrained(folder, device="cpu", use_token_type_ids=not recorded)
        assert chat.use_token_type_ids is (not recorded)
        # A model loaded from the folder carries the record to a session built on it.
        assert ChatSession(chat.model, chat.tokenizer).use_token_type_ids is recorded
    assert "No record" not in caplog.text


def test_a_folder_with_no_record_keeps_the_old_rule_and_says_so(plain_dir, caplog):
    with caplog.at_level("WARNING", logger="gpt2chat"):
        chat = ChatSession.from_pretrained(plain_dir, device="cpu")
    assert chat.use_token_type_ids is True  # GPT-2's forward takes them: fed, as before
    assert "No record of whether this model was trained with token_type_ids" in caplog.text


def test_token_types_for_a_model_that_takes_none_is_an_error():
    from gpt2chat.chat.options import token_type_choice

    with pytest.raises(ValueError, match="forward takes no token_type_ids"):
        token_type_choice(True, {"input_ids"})


def test_the_session_describes_its_decoding(tuned_dir, plain_dir):
    chat = ChatSession.from_pretrained(tuned_dir, device="cpu")
    assert chat.describe_decoding() == (
        "sampling (temperature 0.7, top-p 0.9), repetition penalty 1.2, context guidance 1.3, "
        "best of 3 candidates (MMI 0.4 against 2 messages); up to 12 tokens; window of 3 utterances"
    )
    greedy = ChatSession.from_pretrained(plain_dir, device="cpu", do_sample=False)
    assert greedy.describe_decoding() == "greedy; up to 64 tokens; window of 5 utterances"
    beams = ChatSession.from_pretrained(plain_dir, device="cpu", do_sample=False, num_beams=3)
    assert beams.describe_decoding().startswith("beam search (3 beams);")


def test_from_pretrained_arguments_override_the_saved_settings(tuned_dir):
    chat = ChatSession.from_pretrained(tuned_dir, device="cpu", top_p=0.5, max_turns=4)
    assert (chat.generation_config.top_p, chat.max_turns) == (0.5, 4)
    assert chat.num_candidates == 3  # the rest still from the file
    greedy = ChatSession.from_pretrained(tuned_dir, device="cpu", do_sample=False)
    assert not greedy.generation_config.do_sample and greedy.num_candidates == 1
    assert greedy.guidance_scale == 1.3
    assert isinstance(greedy.send("Hi"), str)


def test_the_saved_settings_change_the_replies(tuned_dir):
    """The saved window and length really reach generation: greedy replies with the file's
    max_new_tokens are cut where the library default would not be."""
    saved = ChatSession.from_pretrained(tuned_dir, device="cpu", do_sample=False)
    plain = ChatSession.from_pretrained(tuned_dir, device="cpu", do_sample=False, chat_config=False)
    saved.send("Hello there, how are you?")
    plain.send("Hello there, how are you?")
    assert saved.last_turn.generated_tokens == 12  # this random model never stops by itself
    assert plain.last_turn.generated_tokens > 12


# --------------------------------------------------------------------------- gpt2chat chat
def _cli_session(monkeypatch, argv: list[str]) -> ChatSession:
    """Run ``gpt2chat chat`` up to the terminal loop; return the session it built."""
    import gpt2chat.chat.repl as repl

    seen = {}

    def fake_repl(session, **kwargs):
        seen["session"] = session
        return 0

    monkeypatch.setattr(repl, "run_repl", fake_repl)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["chat", *argv, "--gpu", "cpu"]) == 0
    return seen["session"]


def test_cli_chat_without_flags_uses_the_saved_settings(tuned_dir, monkeypatch):
    chat = _cli_session(monkeypatch, ["--model_path", str(tuned_dir)])
    assert session_settings(chat) == {k: v for k, v in DEMO_LIKE.to_dict().items() if k in SHOWN}
    chat = _cli_session(monkeypatch, ["--model_path", str(tuned_dir), "--temperature", "0.9"])
    assert chat.generation_config.temperature == 0.9 and chat.num_candidates == 3
    chat = _cli_session(monkeypatch, ["--model_path", str(tuned_dir), "--greedy"])
    assert not chat.generation_config.do_sample and chat.num_candidates == 1
    chat = _cli_session(monkeypatch, ["--model_path", str(tuned_dir), "--no_chat_config"])
    assert (chat.max_turns, chat.generation_config.top_p, chat.num_candidates) == (5, 0.8, 1)


def test_cli_chat_reports_a_broken_chat_config(tmp_path, plain_dir, capsys):
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(plain_dir, folder)
    (folder / CHAT_CONFIG_NAME).write_text('{"format": "gpt2chat-chat-config", "version": 1, '
                                          '"top_p": 2}')  # fmt: skip
    assert main(["chat", "--model_path", str(folder), "--gpu", "cpu"]) != 0
    err = capsys.readouterr().err
    assert CHAT_CONFIG_NAME in err and "top_p" in err


# --------------------------------------------------------------------------- one declaration
def test_every_front_ends_decoding_flags_are_generated_from_chat_settings():
    """A decoding option is declared once, on ChatSettings: the chat and serve CLIs, the server's
    settings and the demo get its flag, help and checks from there."""
    from dataclasses import fields

    from gpt2chat.chat.flags import DecodingOptions
    from gpt2chat.cli.chat import ChatArguments
    from gpt2chat.cli.serve import ServeArguments
    from gpt2chat.demo import DemoArguments
    from gpt2chat.serve import ServeSettings

    declared = {f.name: f for f in fields(ChatSettings)}
    front_ends = {
        ChatArguments: (),
        ServeArguments: ("use_token_type_ids",),
        ServeSettings: ("use_token_type_ids",),
        DemoArguments: ("max_turns", "use_token_type_ids"),  # max_turns: the training's own
    }
    for cls, excluded in front_ends.items():
        generated = next(b for b in cls.__mro__[1:] if issubclass(b, DecodingOptions))
        names = [f.name for f in fields(generated)]
        assert names == [n for n in declared if n not in excluded], cls
        for f in fields(generated):
            assert f.metadata["help"].startswith(declared[f.name].metadata["help"]), f.name
    with pytest.raises(ValueError, match=r"--top_p must be in \(0, 1\], got 2"):
        ChatArguments(model_path="x", top_p=2)
    with pytest.raises(ValueError, match=r"--top_p must be in \(0, 1\], got 2"):
        DemoArguments(top_p=2)
    with pytest.raises(ValueError, match=r"--top_p must be in \(0, 1\], got 2"):
        ServeSettings(top_p=2)
    assert ServeSettings(temperature=0).with_chat_settings(None).do_sample is False  # greedy
