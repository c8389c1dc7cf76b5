import logging

import datasets
import pytest

from gpt2chat import dataset_statistics, get_speaker_tokens, prepare_dataset
from gpt2chat.render import IGNORE_INDEX


def dialogues(rows, source="toy", persona=None):
    data = {"utterances": rows, "source": [source] * len(rows)}
    if persona is not None:
        data["persona"] = persona
    return datasets.Dataset.from_dict(data)


def decode(tok, ids):
    return tok.decode(ids)


def test_one_example_per_sp2_reply(chat_tokenizer):
    ds = dialogues([["Hi", "Hello there", "How are you?", "Fine.", "Good"]])
    out = prepare_dataset(ds, chat_tokenizer, max_turns=5, max_len=64)
    assert len(out) == 2  # replies at turns 2 and 4
    first, second = out[0], out[1]
    assert decode(chat_tokenizer, first["input_ids"]) == "<bos><sp1>Hi<sp2>Hello there<|endoftext|>"
    assert decode(chat_tokenizer, second["input_ids"]) == (
        "<bos><sp1>Hi<sp2>Hello there<sp1>How are you?<sp2>Fine.<|endoftext|>"
    )
    t = get_speaker_tokens(chat_tokenizer)
    supervised = [x for x in second["labels"] if x != IGNORE_INDEX]
    assert supervised == chat_tokenizer("Fine.", add_special_tokens=False)["input_ids"] + [
        t.eos_token_id
    ]
    assert second["length"] == len(second["input_ids"])
    assert len(second["token_type_ids"]) == len(second["input_ids"]) == len(second["labels"])


def test_max_turns_window(chat_tokenizer):
    ds = dialogues([["a", "b", "c", "d", "e", "f"]])
    out = prepare_dataset(ds, chat_tokenizer, max_turns=2, max_len=64)
    assert [decode(chat_tokenizer, x) for x in out["input_ids"]] == [
        "<bos><sp1>a<sp2>b<|endoftext|>",
        "<bos><sp1>c<sp2>d<|endoftext|>",
        "<bos><sp1>e<sp2>f<|endoftext|>",
    ]


def test_reply_speakers_both_swaps_roles(chat_tokenizer):
    ds = dialogues([["a", "b", "c"]])
    out = prepare_dataset(ds, chat_tokenizer, reply_speakers="both", max_len=64)
    texts = [decode(chat_tokenizer, x) for x in out["input_ids"]]
    assert texts == [
        "<bos><sp1>a<sp2>b<|endoftext|>",
        # the first speaker's reply "c": roles swapped so the replier is <sp2>
        "<bos><sp2>a<sp1>b<sp2>c<|endoftext|>",
    ]
    t = get_speaker_tokens(chat_tokenizer)
    assert out[1]["token_type_ids"][0] == t.sp2_token_id  # <bos> takes the first speaker's type
    assert out[1]["token_type_ids"][-1] == t.sp2_token_id


def test_long_history_cropped_and_overlong_reply_skipped(chat_tokenizer, caplog):
    long = " ".join(["word"] * 50)
    ds = dialogues([["a " * 20, "short reply", "x", long]])
    with caplog.at_level(logging.WARNING, logger="gpt2chat"):
        out = prepare_dataset(ds, chat_tokenizer, max_turns=5, max_len=16)
    # "short reply" keeps fewer turns of history; the 50-token reply cannot fit at all
    assert len(out) == 1
    assert decode(chat_tokenizer, out[0]["input_ids"]) == "<bos><sp2>short reply<|endoftext|>"
    assert "1 replies skipped" in caplog.text
    (stats,) = dataset_statistics(ds, out)
    assert (stats.dialogues, stats.utterances, stats.examples, stats.skipped_replies) == (
        1,
        4,
        1,
        1,
    )


def test_persona_segment(chat_tokenizer):
    ds = dialogues(
        [["hi", "hello", "how are you", "fine"]], persona=[["i like tea.", "i have a cat."]]
    )
    t = get_speaker_tokens(chat_tokenizer)
    plain = prepare_dataset(ds, chat_tokenizer, max_len=64)
    assert "tea" not in decode(chat_tokenizer, plain[0]["input_ids"])
    out = prepare_dataset(ds, chat_tokenizer, with_persona=True, max_len=64)
    ex = out[1]
    assert decode(chat_tokenizer, ex["input_ids"]).startswith(
        "<bos>i like tea. i have a cat.<sp1>hi"
    )
    n_persona = len(
        chat_tokenizer("i like tea. i have a cat.", add_special_tokens=False)["input_ids"]
    )
    assert ex["token_type_ids"][1 : 1 + n_persona] == [t.bos_token_id] * n_persona
    # when cropping for max_len the persona is kept whole and the history shrinks
    cropped = prepare_dataset(ds, chat_tokenizer, with_persona=True, max_len=n_persona + 8)
    text = decode(chat_tokenizer, cropped[-1]["input_ids"])
    assert text.startswith("<bos>i like tea. i have a cat.") and text.endswith(
        "<sp2>fine<|endoftext|>"
    )
    assert "hello" not in text


def test_statistics_per_source(chat_tokenizer):
    ds = datasets.concatenate_datasets(
        [dialogues([["a", "b"], ["c", "d", "e"]], "one"), dialogues([["f", "g", "h", "i"]], "two")]
    )
    out = prepare_dataset(ds, chat_tokenizer, max_len=64)
    rows = {r.source: r for r in dataset_statistics(ds, out)}
    assert rows["one"].examples == 2 and rows["two"].examples == 2 and rows["all"].examples == 4
    assert rows["all"].dialogues == 3 and rows["all"].utterances == 9
    assert rows["one"].max_length == max(out.filter(lambda r: r["source"] == "one")["length"])


def test_uses_datasets_cache(chat_tokenizer, tmp_path):
    ds = dialogues([["a", "b", "c", "d"]] * 10)
    ds.save_to_disk(tmp_path / "d")
    on_disk = datasets.load_from_disk(tmp_path / "d")
    first = prepare_dataset(on_disk, chat_tokenizer, max_len=64)
    second = prepare_dataset(on_disk, chat_tokenizer, max_len=64)
    assert first.cache_files and first.cache_files == second.cache_files


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_turns": 0}, "max_turns"),
        ({"max_len": 2}, "max_len"),
        ({"reply_speakers": "sp1"}, "reply_speakers"),
    ],
)
def test_bad_arguments(chat_tokenizer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        prepare_dataset(dialogues([["a", "b"]]), chat_tokenizer, **kwargs)


def test_plain_tokenizer_is_refused(gpt2_tokenizer):
    with pytest.raises(ValueError, match="add_speaker_tokens"):
        prepare_dataset(dialogues([["a", "b"]]), gpt2_tokenizer)


def test_missing_column(chat_tokenizer):
    with pytest.raises(ValueError, match="'utterances' column"):
        prepare_dataset(datasets.Dataset.from_dict({"text": ["a"]}), chat_tokenizer)
    with pytest.raises(ValueError, match=r"datasets\.Dataset"):
        prepare_dataset([["a", "b"]], chat_tokenizer)


def _daily_dialog_features(chat_tokenizer, root):
    from gpt2chat import load_dialogues

    dlg = load_dialogues("daily_dialog", "validation", data_dir=root / "dailydialog")
    out = prepare_dataset(dlg, chat_tokenizer, max_len=256, num_proc=2)
    (stats,) = dataset_statistics(dlg, out)
    assert stats.dialogues == len(dlg)
    assert stats.utterances == sum(len(u) for u in dlg["utterances"])
    assert stats.examples + stats.skipped_replies == sum(len(u) // 2 for u in dlg["utterances"])
    assert stats.max_length <= 256
    t = get_speaker_tokens(chat_tokenizer)
    for ex in out.select(range(50)):
        labels = [x for x in ex["labels"] if x != IGNORE_INDEX]
        assert labels[-1] == t.eos_token_id and len(labels) >= 2
        assert ex["input_ids"][0] == t.bos_token_id and ex["token_type_ids"][-1] == t.sp2_token_id
    return stats


def test_daily_dialog_features(chat_tokenizer, data_dir):
    stats = _daily_dialog_features(chat_tokenizer, data_dir)
    assert stats.examples > 300


@pytest.mark.needs_shared("data", "dailydialog", reason="checks the real DailyDialog split sizes")
def test_real_daily_dialog_features(chat_tokenizer, shared_data_dir):
    stats = _daily_dialog_features(chat_tokenizer, shared_data_dir)
    assert stats.dialogues == 1000 and stats.utterances == 8069


def _reference_examples(ds, tok, *, max_turns, max_len, reply_speakers, with_persona):
    """The features prepare_dataset must give, built example by example with render_ids (the
    reference loop of tests/test_render.py)."""
    from gpt2chat.render import encode_texts

    from .test_render import _examples_one_by_one

    rows = list(ds)
    dialogues = [encode_texts(tok, row["utterances"]) for row in rows]
    personas = None
    if with_persona:
        personas = [encode_texts(tok, [" ".join(row["persona"] or [])])[0] for row in rows]
    examples = _examples_one_by_one(
        dialogues,
        personas,
        get_speaker_tokens(tok),
        max_turns=max_turns,
        max_len=max_len,
        reply_speakers=reply_speakers,
    )
    return [
        {**ex, "length": len(ex["input_ids"]), "source": rows[i]["source"]} for i, ex in examples
    ]


@pytest.mark.parametrize("reply_speakers", ["sp2", "both"])
@pytest.mark.parametrize("with_persona", [False, True])
@pytest.mark.parametrize("max_len", [12, 40, 1024])
def test_prepare_dataset_matches_render_ids_end_to_end(
    chat_tokenizer, reply_speakers, with_persona, max_len
):
    """The whole map path (texts tokenised, personas joined, batches cut at odd places, Arrow
    columns, ``length`` and ``source``) gives render_ids' examples. The layout itself,
    render.render_batch against render_ids, is property-tested in tests/test_render.py."""
    import random

    rng = random.Random(f"{reply_speakers}{with_persona}{max_len}")
    words = ["hi", "there", "how", "are", "you", "fine", "thanks", "<sp1>", "tea", "?", "!", ""]
    rows, personas = [], []
    for _ in range(60):
        n = rng.randint(0, 9)
        rows.append([" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(n)])
        personas.append(
            [" ".join(rng.choices(words, k=rng.randint(0, 6))) for _ in range(rng.randint(0, 3))]
        )
    ds = dialogues(rows, persona=personas)
    kwargs = {"max_turns": 4, "max_len": max_len, "reply_speakers": reply_speakers}
    got = prepare_dataset(ds, chat_tokenizer, with_persona=with_persona, batch_size=7, **kwargs)
    want = _reference_examples(ds, chat_tokenizer, with_persona=with_persona, **kwargs)
    assert got.to_list() == want


def test_statistics_follow_an_indices_mapping(chat_tokenizer):
    ds = datasets.concatenate_datasets(
        [dialogues([["a", "b"]] * 3, "one"), dialogues([["c", "d", "e", "f"]] * 2, "two")]
    )
    picked = ds.select([4, 0])  # not contiguous: an indices mapping over the table
    out = prepare_dataset(picked, chat_tokenizer, max_len=64)
    rows = {r.source: r for r in dataset_statistics(picked, out)}
    assert (rows["two"].dialogues, rows["two"].utterances, rows["two"].examples) == (1, 4, 2)
    assert (rows["one"].dialogues, rows["one"].examples, rows["all"].dialogues) == (1, 1, 2)


_SECOND_RUN = """
import json, os, sys, time
from gpt2chat import add_speaker_tokens, load_dialogues, prepare_dataset
from gpt2chat.tokens import load_tokenizer
tok = load_tokenizer(sys.argv[1])
add_speaker_tokens(tok)
start = time.time()
out = prepare_dataset(load_dialogues("daily_dialog", "train", sys.argv[2]), tok, max_len=64)
files = [f["filename"] for f in out.cache_files]
print(json.dumps({"files": files, "hit": all(os.path.getmtime(f) < start for f in files)}))
"""


def test_features_cache_is_hit_by_a_new_process(chat_tokenizer, tmp_path, monkeypatch):
    """load_dialogues + prepare_dataset in a fresh process reuse the first run's cache files;
    another argument or another version of the rendering code misses."""
    import json
    import subprocess
    import sys

    from gpt2chat import features, load_dialogues

    from .conftest import tokenizer_dir

    monkeypatch.setenv("GPT2CHAT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "dd" / "train"
    data.mkdir(parents=True)
    lines = [
        f"Hi {i} . __eou__ Hello ! __eou__ How are you ? __eou__ Fine . __eou__" for i in range(50)
    ]
    (data / "dialogues_train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    first = prepare_dataset(
        load_dialogues("daily_dialog", "train", data.parent), chat_tokenizer, max_len=64
    )
    (cache_file,) = [f["filename"] for f in first.cache_files]
    assert len(first) == 100
    run = subprocess.run(
        [sys.executable, "-c", _SECOND_RUN, str(tokenizer_dir()), str(data.parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    second = json.loads(run.stdout.strip().splitlines()[-1])
    assert second == {"files": [cache_file], "hit": True}

    dialogues = load_dialogues("daily_dialog", "train", data.parent)
    other = prepare_dataset(dialogues, chat_tokenizer, max_len=32)
    assert other.cache_files[0]["filename"] != cache_file
    monkeypatch.setattr(features, "_code_hash", lambda: "another version")
    changed_code = prepare_dataset(dialogues, chat_tokenizer, max_len=64)
    assert changed_code.cache_files[0]["filename"] != cache_file
