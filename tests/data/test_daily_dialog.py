# ruff: noqa: RUF001  (DailyDialog's curly apostrophes)
"""DailyDialog: the official split files, the original zip release, and every bad input."""

from __future__ import annotations

import io
import logging
import re
import zipfile

import pytest

from gpt2chat import load_dialogues
from gpt2chat.data import daily_dialog
from gpt2chat.data.base import DataFormatError
from gpt2chat.data.daily_dialog import load_daily_dialog

from ..conftest import require_shared

# Three dialogues in the original format: tokenised text, "__eou__" after every utterance.
TRAIN = (
    "Say , Jim , how about going for a few beers after dinner ? __eou__ You know that is "
    "tempting but is really not good for our fitness . __eou__\n"
    "Can you do push-ups ? __eou__ Of course I can . It ’ s a piece of cake ! __eou__ "
    "Really ? __eou__\n"
    "Good.Let ' s go now . __eou__ All right . __eou__\n"
)
TEST = "Hello ! __eou__ Hi , Bob . __eou__\n"
SPLITS = {"train": TRAIN, "validation": TEST, "test": TEST}


def write_split_dirs(root, splits=SPLITS):
    """The unzipped layout: <root>/<split>/dialogues_<split>.txt."""
    for split, text in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / f"dialogues_{split}.txt").write_text(text, encoding="utf-8")
        (root / split / f"dialogues_act_{split}.txt").write_text("1 2\n", encoding="utf-8")
    return root


def split_zip_bytes(split, text):
    """<split>.zip as in the release: <split>/dialogues_<split>.txt and the label files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(f"{split}/dialogues_{split}.txt", text)
        zf.writestr(f"{split}/dialogues_act_{split}.txt", "1 2\n")
        zf.writestr(f"{split}/dialogues_emotion_{split}.txt", "0 0\n")
    return buffer.getvalue()


def write_release_zip(path, splits=SPLITS):
    """ijcnlp_dailydialog.zip: ijcnlp_dailydialog/{train,validation,test}.zip and more."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ijcnlp_dailydialog/readme.txt", "DailyDialog")
        zf.writestr("ijcnlp_dailydialog/dialogues_text.txt", "a __eou__ b __eou__\n")
        for split, text in splits.items():
            zf.writestr(f"ijcnlp_dailydialog/{split}.zip", split_zip_bytes(split, text))
    return path


EXPECTED_TRAIN = [
    [
        "Say, Jim, how about going for a few beers after dinner?",
        "You know that is tempting but is really not good for our fitness.",
    ],
    ["Can you do push-ups?", "Of course I can. It's a piece of cake!", "Really?"],
    ["Good. Let's go now.", "All right."],
]


def test_split_folders(tmp_path):
    ds = load_dialogues("daily_dialog", "train", write_split_dirs(tmp_path))
    assert ds["utterances"] == EXPECTED_TRAIN
    assert set(ds["source"]) == {"daily_dialog"}
    assert ds.split == "train"
    assert load_dialogues("daily_dialog", "validation", tmp_path)["utterances"] == [
        ["Hello!", "Hi, Bob."]
    ]


def test_flat_files(tmp_path):
    (tmp_path / "dialogues_test.txt").write_text(TEST, encoding="utf-8")
    assert load_daily_dialog("test", tmp_path)["utterances"] == [["Hello!", "Hi, Bob."]]


def test_data_dir_is_the_text_file(tmp_path):
    path = tmp_path / "dialogues_test.txt"
    path.write_text(TEST, encoding="utf-8")
    assert load_daily_dialog("test", path)["utterances"] == [["Hello!", "Hi, Bob."]]


def test_release_zip(tmp_path):
    write_release_zip(tmp_path / "ijcnlp_dailydialog.zip")
    assert load_dialogues("daily_dialog", "train", tmp_path)["utterances"] == EXPECTED_TRAIN
    assert load_daily_dialog("test", tmp_path)["utterances"] == [["Hello!", "Hi, Bob."]]
    # The .zip file itself as data_dir.
    ds = load_daily_dialog("train", tmp_path / "ijcnlp_dailydialog.zip")
    assert ds["utterances"] == EXPECTED_TRAIN


def test_unpacked_release_folder_with_split_zips(tmp_path):
    folder = tmp_path / "ijcnlp_dailydialog"
    folder.mkdir()
    for split, text in SPLITS.items():
        (folder / f"{split}.zip").write_bytes(split_zip_bytes(split, text))
    assert load_daily_dialog("train", tmp_path)["utterances"] == EXPECTED_TRAIN
    assert load_daily_dialog("train", folder)["utterances"] == EXPECTED_TRAIN  # the folder itself


def test_no_data_dir_downloads(tmp_path, monkeypatch):
    release = tmp_path / "cache" / "daily_dialog" / "extracted" / "ijcnlp_dailydialog"
    release.mkdir(parents=True)
    for split, text in SPLITS.items():
        (release / f"{split}.zip").write_bytes(split_zip_bytes(split, text))
    calls = []

    def fake_download(name, cache_dir=None):
        calls.append((name, cache_dir))
        return release

    monkeypatch.setattr(daily_dialog, "download_dataset", fake_download)
    ds = load_dialogues("daily_dialog", "train", cache_dir=tmp_path / "cache")
    assert ds["utterances"] == EXPECTED_TRAIN
    assert calls == [("daily_dialog", tmp_path / "cache")]


def test_normalize_false_keeps_the_tokenised_text(tmp_path):
    ds = load_daily_dialog("train", write_split_dirs(tmp_path), normalize=False)
    assert ds["utterances"][2] == ["Good.Let ' s go now .", "All right ."]


def test_empty_utterances_and_short_dialogues_are_counted(tmp_path, caplog):
    text = (
        "Hi ! __eou__ __eou__ Hello . __eou__ How are you ? __eou__\n"
        "Only one . __eou__\n   __eou__  __eou__\n"
        "A . __eou__ __eou__ __eou__ B . __eou__\n"
    )
    write_split_dirs(tmp_path, {"train": text})
    with caplog.at_level(logging.INFO, logger="gpt2chat.data"):
        ds = load_daily_dialog("train", tmp_path)
    # An empty turn between two utterances of one speaker joins them: the speakers keep
    # alternating ("Hello." is not a reply to "Hi!"); two empty turns in a row change nothing.
    assert ds["utterances"] == [["Hi! Hello.", "How are you?"], ["A.", "B."]]
    summary = ds.info.description
    assert "5 empty utterances" in summary
    assert "1 utterances joined across an empty turn" in summary
    assert "2 dialogues with fewer than 2 utterances" in summary
    assert summary in caplog.text


def test_malformed_lines_are_skipped_counted_and_logged(tmp_path, caplog):
    lines = [
        "Hi ! __eou__ Hello . __eou__",
        "this line has no end-of-utterance marker",
        "",
        "How are you ? __eou__ Fine . __eou__",
        "neither has this one",
    ]
    write_split_dirs(tmp_path, {"train": "\n".join(lines) + "\n"})
    with caplog.at_level(logging.WARNING, logger="gpt2chat.data"):
        ds = load_daily_dialog("train", tmp_path)
    assert ds["utterances"] == [["Hi!", "Hello."], ["How are you?", "Fine."]]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "dialogues_train.txt" in message
    assert "skipped 2 line(s)" in message
    assert "line(s) 2, 5" in message


def test_last_utterance_without_marker_is_kept(tmp_path):
    write_split_dirs(tmp_path, {"train": "Hi ! __eou__ Hello .\n"})
    assert load_daily_dialog("train", tmp_path)["utterances"] == [["Hi!", "Hello."]]


def test_missing_file_names_the_expected_paths(tmp_path):
    write_split_dirs(tmp_path, {"train": TRAIN})
    with pytest.raises(FileNotFoundError, match=r"test/dialogues_test\.txt") as err:
        load_dialogues("daily_dialog", "test", tmp_path)
    assert str(tmp_path) in str(err.value)
    assert "data_dir" in str(err.value)


def test_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_daily_dialog("train", tmp_path / "nope")


def test_undecodable_bytes_name_file_and_line(tmp_path):
    write_split_dirs(tmp_path, {"train": TRAIN})
    path = tmp_path / "train" / "dialogues_train.txt"
    path.write_bytes(TRAIN.encode() + b"Caf\xe9 ? __eou__ Yes . __eou__\n")
    with pytest.raises(DataFormatError, match=r"dialogues_train\.txt, line 4"):
        load_daily_dialog("train", tmp_path)


def test_undecodable_bytes_inside_a_zip_name_member_and_line(tmp_path):
    bad = b"Hi ! __eou__ Hello . __eou__\n\xff\xfe __eou__\n"
    (tmp_path / "test.zip").write_bytes(split_zip_bytes("test", bad))
    with pytest.raises(DataFormatError, match=r"test\.zip/test/dialogues_test\.txt, line 2"):
        load_daily_dialog("test", tmp_path)


def test_broken_zip(tmp_path):
    (tmp_path / "train.zip").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataFormatError, match=r"train\.zip: not a readable \.zip"):
        load_daily_dialog("train", tmp_path)


def test_zip_without_the_split_file(tmp_path):
    with zipfile.ZipFile(tmp_path / "ijcnlp_dailydialog.zip", "w") as zf:
        zf.writestr("something/else.txt", "x")
    with pytest.raises(DataFormatError, match=r"neither train\.zip nor dialogues_train\.txt"):
        load_daily_dialog("train", tmp_path)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown split 'dev'"):
        load_dialogues("daily_dialog", "dev", write_split_dirs(tmp_path))
    with pytest.raises(ValueError, match=r"Unknown split 'valid'"):
        load_daily_dialog("valid", tmp_path)


def test_unknown_option(tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        load_daily_dialog("train", write_split_dirs(tmp_path), colour="blue")


@pytest.mark.parametrize(
    ("split", "dialogues", "utterances"),
    [("train", 11_118, 87_171), ("validation", 1_000, 8_069), ("test", 1_000, 7_740)],
)
@pytest.mark.needs_shared("data", "dailydialog", reason="checks the official DailyDialog counts")
def test_real_data_official_counts(split, dialogues, utterances):
    root = require_shared("data", "dailydialog")
    ds = load_dialogues("daily_dialog", split, root)
    assert len(ds) == dialogues
    assert sum(len(u) for u in ds["utterances"]) == utterances
    assert all(len(u) >= 2 for u in ds["utterances"])
    assert (
        ds.info.description
        == f"daily_dialog/{split}: {dialogues} dialogues, {utterances} utterances"
    )
    if split == "validation":
        text = "\n".join(u for d in ds["utterances"] for u in d)
        assert " ?" not in text and " ," not in text and "__eou__" not in text


def test_parsed_split_is_cached_and_invalidated(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("GPT2CHAT_CACHE", str(tmp_path / "cache"))
    root = write_split_dirs(tmp_path / "dd")
    first = load_dialogues("daily_dialog", "train", root)
    (cache_file,) = [f["filename"] for f in first.cache_files]
    assert cache_file.startswith(str(tmp_path / "cache" / "dialogues" / "daily_dialog"))

    # A second load is served by the Arrow file: the text is not parsed again.
    def no_parse(*args):
        raise AssertionError("parsed again")

    monkeypatch.setattr(daily_dialog, "_parse", no_parse)
    again = load_dialogues("daily_dialog", "train", root)
    assert [f["filename"] for f in again.cache_files] == [cache_file]
    assert again._fingerprint == first._fingerprint
    assert again["utterances"] == EXPECTED_TRAIN and again.info.description == (
        first.info.description
    )
    monkeypatch.undo()
    monkeypatch.setenv("GPT2CHAT_CACHE", str(tmp_path / "cache"))

    # Another option or another version of the file: another cache entry.
    raw = load_dialogues("daily_dialog", "train", root, normalize=False)
    assert raw.cache_files[0]["filename"] != cache_file
    (root / "train" / "dialogues_train.txt").write_text(TRAIN + TEST, encoding="utf-8")
    changed = load_dialogues("daily_dialog", "train", root)
    assert len(changed) == len(first) + 1
    assert changed.cache_files[0]["filename"] != cache_file

    # datasets.disable_caching(): built in memory, nothing written.
    datasets.disable_caching()
    try:
        in_memory = load_dialogues("daily_dialog", "validation", root)
    finally:
        datasets.enable_caching()
    assert in_memory.cache_files == [] and len(in_memory) == 1


def test_unwritable_cache_builds_in_memory(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GPT2CHAT_CACHE", str(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="gpt2chat"):
        ds = load_dialogues("daily_dialog", "train", write_split_dirs(tmp_path / "dd"))
    assert ds["utterances"] == EXPECTED_TRAIN and ds.cache_files == []
    assert "cannot write to the cache folder" in caplog.text


@pytest.mark.parametrize("folder", ["daily_dialog", "dailydialog", "DailyDialog"])
def test_a_root_folder_finds_the_dataset_sub_folder_as_releases_spell_it(tmp_path, folder):
    """`data_dir` may be a root with one sub-folder per dataset, named as the releases name it
    (`dailydialog`) or as gpt2chat does (`daily_dialog`), alone or with other datasets."""
    write_split_dirs(tmp_path / folder)
    (tmp_path / "persona_chat").mkdir()
    (tmp_path / "persona_chat" / "valid_self_original_no_cands.txt").write_text(
        "1 your persona: i like cats.\n2 hi there !\thello , how are you ?\n", encoding="utf-8"
    )
    alone = load_dialogues("daily_dialog", "validation", data_dir=tmp_path)
    assert alone["utterances"] == [["Hello!", "Hi, Bob."]]
    both = load_dialogues(["daily_dialog", "persona_chat"], "validation", data_dir=tmp_path)
    assert sorted(set(both["source"])) == ["daily_dialog", "persona_chat"]
    assert len(both) == 2


# --- line ends: "\r\n", "\n" and a lone "\r" (old Mac OS) all end a line ------------------------

CR_TEXT = "Hi __eou__ Hello __eou__\rHow are you __eou__ Fine __eou__\r"
CR_EXPECTED = [["Hi", "Hello"], ["How are you", "Fine"]]


@pytest.mark.parametrize(
    "text",
    [
        CR_TEXT,
        CR_TEXT.replace("\r", "\r\n"),
        CR_TEXT.replace("\r", "\n"),
        "Hi __eou__ Hello __eou__\r\nHow are you __eou__ Fine __eou__",  # no final line end
        "Hi __eou__ Hello __eou__\r\rHow are you __eou__ Fine __eou__\n",  # a blank line
    ],
)
def test_cr_only_and_mixed_line_ends(tmp_path, text):
    path = tmp_path / "dialogues_train.txt"
    path.write_bytes(text.encode())
    assert load_daily_dialog("train", path, normalize=False)["utterances"] == CR_EXPECTED
    (tmp_path / "train.zip").write_bytes(split_zip_bytes("train", text))
    path.unlink()
    assert load_daily_dialog("train", tmp_path, normalize=False)["utterances"] == CR_EXPECTED


def test_cr_only_line_numbers_in_warnings_and_errors(tmp_path, caplog):
    path = tmp_path / "dialogues_train.txt"
    path.write_bytes(b"Hi __eou__ Hello __eou__\rno marker\r\nA __eou__ B __eou__\rjunk\r")
    with caplog.at_level(logging.WARNING, logger="gpt2chat.data"):
        ds = load_daily_dialog("train", path, normalize=False)
    assert ds["utterances"] == [["Hi", "Hello"], ["A", "B"]]
    assert "skipped 2 line(s) without '__eou__' (not DailyDialog dialogues): line(s) 2, 4" in (
        caplog.text
    )
    bad = b"Hi __eou__ Hello __eou__\rA __eou__ B __eou__\r\nCaf\xe9 __eou__ x __eou__\r"
    path.write_bytes(bad)
    with pytest.raises(DataFormatError, match=r"dialogues_train\.txt, line 3: bytes that are not"):
        load_daily_dialog("train", path)
    path.unlink()
    (tmp_path / "train.zip").write_bytes(split_zip_bytes("train", bad))
    with pytest.raises(DataFormatError, match=r"train\.zip/train/dialogues_train\.txt, line 3: "):
        load_daily_dialog("train", tmp_path)


# --- a damaged archive member: a DataFormatError naming the archive and the member ---------------

MEMBER = "train/dialogues_train.txt"


def _one_member_zip(text, compression=zipfile.ZIP_STORED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        zf.writestr(MEMBER, text)
    return bytearray(buffer.getvalue())


def _bad_crc():
    raw = _one_member_zip("Hi __eou__ Hello __eou__\n" * 10)
    raw[raw.find(b"Hi __eou__")] = ord("X")
    return raw, "zipfile.BadZipFile: Bad CRC-32"


def _corrupt_deflate():
    raw = _one_member_zip("Hi __eou__ Hello __eou__\n" * 100, zipfile.ZIP_DEFLATED)
    start = 30 + len(MEMBER)  # the local header, then the compressed data
    for k in range(start + 2, start + 20):
        raw[k] ^= 0xFF
    return raw, "zlib.error: Error -3"


def _encrypted():
    raw = _one_member_zip("Hi __eou__ Hello __eou__\n")
    raw[6] |= 1  # the "encrypted" flag, in the local and the central header
    raw[raw.find(b"PK\x01\x02") + 8] |= 1
    return raw, "RuntimeError: File .* is encrypted"


def _unknown_method():
    raw = _one_member_zip("Hi __eou__ Hello __eou__\n")
    raw[8] = 99  # the compression method, in the local and the central header
    raw[raw.find(b"PK\x01\x02") + 10] = 99
    return raw, "NotImplementedError: That compression method is not supported"


@pytest.mark.parametrize("damage", [_bad_crc, _corrupt_deflate, _encrypted, _unknown_method])
def test_damaged_zip_member_names_archive_and_member(tmp_path, damage):
    raw, reason = damage()
    (tmp_path / "train.zip").write_bytes(raw)
    with pytest.raises(DataFormatError) as err:
        load_daily_dialog("train", tmp_path)
    assert type(err.value) is DataFormatError
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'train.zip'}: cannot read the member {MEMBER} ")
    assert re.search(reason, message), message
    # The same member inside the release archive (the split archive is one of its members).
    release = tmp_path / "release" / "ijcnlp_dailydialog.zip"
    release.parent.mkdir()
    with zipfile.ZipFile(release, "w") as zf:
        zf.writestr("ijcnlp_dailydialog/train.zip", bytes(raw))
    label = re.escape(f"{release}/ijcnlp_dailydialog/train.zip")
    with pytest.raises(DataFormatError, match=rf"^{label}: cannot read the member {MEMBER} "):
        load_daily_dialog("train", release.parent)


def test_damaged_split_archive_inside_the_release(tmp_path):
    release = tmp_path / "ijcnlp_dailydialog.zip"
    inner = split_zip_bytes("train", TRAIN)
    with zipfile.ZipFile(release, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("ijcnlp_dailydialog/train.zip", inner)
    raw = bytearray(release.read_bytes())
    raw[raw.find(inner) + len(inner) // 2] ^= 0xFF  # the outer CRC no longer matches
    release.write_bytes(raw)
    with pytest.raises(
        DataFormatError,
        match=r"ijcnlp_dailydialog\.zip: cannot read the member ijcnlp_dailydialog/train\.zip "
        r"of the \.zip archive \(zipfile\.BadZipFile: Bad CRC-32",
    ):
        load_daily_dialog("train", tmp_path)
