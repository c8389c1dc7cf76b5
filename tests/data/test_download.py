"""download_dataset against a local HTTP mirror serving archives in the original layouts.

The archives are tiny fixtures built here, not the real files, so the tests patch the expected
SHA-256 in ``SOURCES`` to the fixture's hash (a real mirror must serve the identical files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import importlib.util
import io
import json
import logging
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from gpt2chat.data import download as dl
from gpt2chat.data import load_dialogues
from gpt2chat.data.download import SOURCES, download_dataset

SPLITS = {"train": "train", "validation": "valid", "test": "test"}

# What each fixture archive holds, per split, as plain dialogues.
DD = {
    "train": [["Hello, how are you?", "Fine, thanks. And you?", "Very well."]],
    "validation": [["Where is the station?", "Turn left at the bank."]],
    "test": [["Do you like tea?", "Yes, very much."]],
}
ED = {
    "train": [["I passed my exam today!", "Congratulations, you must be proud."]],
    "validation": [["My dog ran away.", "Oh no, I hope you find him.", "Thanks, me too."]],
    "test": [["I won a prize.", "That is great news!"]],
}
PC_PERSONA = ["i like to ski.", "i have two dogs."]
PC = {
    "train": [["hi, how are you?", "i am great, just back from skiing."]],
    "validation": [["hello there.", "hi! do you have pets?", "yes, a cat.", "i have two dogs."]],
    "test": [["good morning.", "morning! ready to ski?"]],
}
BST = {
    split: [
        {
            "personas": [["I like tea."], ["I am a nurse.", "I love the sea."]],
            "context_dataset": "convai2",
            "free_turker_utterance": f"Seed one {split}.",
            "guided_turker_utterance": f"Seed two {split}.",
            "additional_context": "",
            "dialog": [[0, f"Free {split}."], [1, f"Guided {split}."]],
        }
    ]
    for split in SPLITS
}


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_gz(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def build_daily_dialog(path: Path) -> None:
    files = {"ijcnlp_dailydialog/readme.txt": b"fixture\n"}
    for split, dialogues in DD.items():
        text = "".join(" __eou__ ".join(d) + " __eou__\n" for d in dialogues)
        acts = "".join("1 " * len(d) + "\n" for d in dialogues)
        emotions = "".join("0 " * len(d) + "\n" for d in dialogues)
        files[f"ijcnlp_dailydialog/{split}.zip"] = zip_bytes(
            {
                f"{split}/dialogues_{split}.txt": text.encode(),
                f"{split}/dialogues_act_{split}.txt": acts.encode(),
                f"{split}/dialogues_emotion_{split}.txt": emotions.encode(),
            }
        )
    path.write_bytes(zip_bytes(files))


def build_empathetic_dialogues(path: Path) -> None:
    files = {}
    for split, stem in SPLITS.items():
        rows = ["conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags"]
        for c, dialogue in enumerate(ED[split]):
            for i, utt in enumerate(dialogue, start=1):
                text = utt.replace(",", "_comma_")
                rows.append(f"hit:{c}_conv:{c},{i},proud,{text},{i % 2},{text},5|5|5_5|5|5,")
        files[f"empatheticdialogues/{stem}.csv"] = ("\n".join(rows) + "\n").encode()
    tar_gz(path, files)


def build_persona_chat(path: Path) -> None:
    files = {}
    for split, stem in SPLITS.items():
        for variant in ("self_original", "both_original"):
            lines = []
            for dialogue in PC[split]:
                n = 0
                for p in PC_PERSONA:
                    n += 1
                    lines.append(f"{n} your persona: {p}")
                if variant == "both_original":
                    n += 1
                    lines.append(f"{n} partner's persona: i like tea.")
                for a, b in zip(dialogue[::2], dialogue[1::2]):
                    n += 1
                    lines.append(f"{n} {a}\t{b}")
            files[f"personachat/{stem}_{variant}_no_cands.txt"] = ("\n".join(lines) + "\n").encode()
    tar_gz(path, files)


def build_blended_skill_talk(path: Path) -> None:
    tar_gz(
        path, {f"{stem}.json": json.dumps(BST[split]).encode() for split, stem in SPLITS.items()}
    )


BUILDERS = {
    "daily_dialog": build_daily_dialog,
    "empathetic_dialogues": build_empathetic_dialogues,
    "persona_chat": build_persona_chat,
    "blended_skill_talk": build_blended_skill_talk,
}


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, str]:
    """Build the four fixture archives in one served folder; return name -> sha256."""
    folder = tmp_path_factory.mktemp("mirror")
    hashes = {}
    for name, build in BUILDERS.items():
        target = folder / SOURCES[name].filename
        build(target)
        hashes[name] = hashlib.sha256(target.read_bytes()).hexdigest()
    return {"folder": folder, **hashes}


class Server:
    """A local HTTP server on 127.0.0.1 serving ``folder``; records the requested paths."""

    def __init__(self, folder: Path):
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(folder), **kw)

            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files"
        # Serve under /files/ to check that the base URL may have a path.
        Handler.translate_path = lambda h, p: str(folder / Path(p.split("?")[0]).name)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self):
        if not self.thread.is_alive():
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def mirror(archives, monkeypatch):
    """Serve the fixture archives and point GPT2CHAT_DOWNLOAD_BASE_URL at them."""
    server = Server(archives["folder"])
    monkeypatch.setenv("GPT2CHAT_DOWNLOAD_BASE_URL", server.url + "/")
    monkeypatch.delenv("GPT2CHAT_CACHE", raising=False)
    for name in BUILDERS:
        monkeypatch.setitem(
            SOURCES, name, dataclasses.replace(SOURCES[name], sha256=archives[name])
        )
    yield server
    server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sources_table_is_complete():
    assert set(SOURCES) == set(BUILDERS)
    for spec in SOURCES.values():
        assert spec.url.endswith("/" + spec.filename)
        assert spec.sha256 is not None and len(spec.sha256) == 64
        int(spec.sha256, 16)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("daily_dialog", ["train.zip", "validation.zip", "test.zip"]),
        ("empathetic_dialogues", ["train.csv", "valid.csv", "test.csv"]),
        ("persona_chat", ["train_self_original_no_cands.txt", "valid_both_original_no_cands.txt"]),
        ("blended_skill_talk", ["train.json", "valid.json", "test.json"]),
    ],
)
def test_download_extracts_original_layout(mirror, tmp_path, name, expected):
    folder = download_dataset(name, cache_dir=tmp_path / "cache")
    assert folder.is_dir()
    assert folder.is_relative_to(tmp_path / "cache" / name)
    for f in expected:
        assert (folder / f).is_file(), f
    if SOURCES[name].subdir:
        assert folder.name == SOURCES[name].subdir
    assert (tmp_path / "cache" / name / "complete.json").is_file()
    assert not (tmp_path / "cache" / name / SOURCES[name].filename).exists()
    assert not list((tmp_path / "cache" / name).glob("*.part"))
    assert mirror.requests == [f"/files/{SOURCES[name].filename}"]


def test_second_call_needs_no_network(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2CHAT_CACHE", str(tmp_path / "envcache"))
    first = download_dataset("blended_skill_talk")
    assert first.is_relative_to(tmp_path / "envcache" / "blended_skill_talk")
    mirror.stop()
    monkeypatch.setenv("GPT2CHAT_DOWNLOAD_BASE_URL", f"http://127.0.0.1:{free_port()}")
    assert download_dataset("blended_skill_talk") == first
    assert len(mirror.requests) == 1


def test_default_cache_is_under_datasets_cache(monkeypatch, tmp_path):
    import datasets

    monkeypatch.delenv("GPT2CHAT_CACHE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    assert dl.default_cache_root() == tmp_path / "hf" / "gpt2chat"


def test_checksum_mismatch(mirror, tmp_path, monkeypatch):
    spec = SOURCES["empathetic_dialogues"]
    monkeypatch.setitem(SOURCES, "empathetic_dialogues", dataclasses.replace(spec, sha256="0" * 64))
    with pytest.raises(ValueError, match="Checksum mismatch") as err:
        download_dataset("empathetic_dialogues", cache_dir=tmp_path)
    message = str(err.value)
    assert "empatheticdialogues.tar.gz" in message
    assert "0" * 64 in message
    assert spec.sha256 in message  # the actual hash of the served fixture
    folder = tmp_path / "empathetic_dialogues"
    assert not (folder / "complete.json").exists()
    assert not (folder / spec.filename).exists()
    # With the right hash, the next call downloads again and succeeds.
    monkeypatch.setitem(SOURCES, "empathetic_dialogues", spec)
    assert (download_dataset("empathetic_dialogues", cache_dir=tmp_path) / "valid.csv").is_file()


def test_unreachable_url_is_a_clear_error(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/mirror"
    monkeypatch.setenv("GPT2CHAT_DOWNLOAD_BASE_URL", url)
    with pytest.raises(ConnectionError) as err:
        download_dataset("daily_dialog", cache_dir=tmp_path, timeout=5)
    message = str(err.value)
    assert f"{url}/ijcnlp_dailydialog.zip" in message
    assert "data_dir" in message and "GPT2CHAT_DOWNLOAD_BASE_URL" in message
    assert not list((tmp_path / "daily_dialog").glob("*.part"))


def test_missing_file_on_mirror(mirror, tmp_path, monkeypatch):
    spec = SOURCES["persona_chat"]
    monkeypatch.setitem(SOURCES, "persona_chat", dataclasses.replace(spec, filename="nope.tgz"))
    with pytest.raises(ConnectionError, match=r"nope\.tgz.*(404|Not Found)"):
        download_dataset("persona_chat", cache_dir=tmp_path)


def test_unverified_source_warns(mirror, tmp_path, monkeypatch, caplog):
    spec = SOURCES["blended_skill_talk"]
    monkeypatch.setitem(SOURCES, "blended_skill_talk", dataclasses.replace(spec, sha256=None))
    with caplog.at_level(logging.WARNING):
        folder = download_dataset("blended_skill_talk", cache_dir=tmp_path)
    assert (folder / "train.json").is_file()
    assert "UNVERIFIED" in caplog.text


def test_unknown_name():
    with pytest.raises(
        ValueError, match=r"No download source for dataset .chitchat.*downloadable datasets"
    ):
        download_dataset("chitchat")


def test_source_url(monkeypatch):
    monkeypatch.delenv("GPT2CHAT_DOWNLOAD_BASE_URL", raising=False)
    assert dl.source_url("persona_chat") == SOURCES["persona_chat"].url
    monkeypatch.setenv("GPT2CHAT_DOWNLOAD_BASE_URL", "https://mirror.example/data/")
    assert dl.source_url("persona_chat") == "https://mirror.example/data/personachat.tgz"


EXPECTED = {
    "daily_dialog": DD,
    "empathetic_dialogues": ED,
    "persona_chat": PC,
    "blended_skill_talk": {
        s: [[f"Seed one {s}.", f"Seed two {s}.", f"Free {s}.", f"Guided {s}."]] for s in SPLITS
    },
}


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("split", ["train", "validation"])
def test_load_dialogues_downloads(mirror, tmp_path, name, split):
    if importlib.util.find_spec(f"gpt2chat.data.{name}") is None:
        pytest.skip(f"gpt2chat/data/{name}.py has not landed yet")
    ds = load_dialogues(name, split, data_dir=None, cache_dir=tmp_path / "cache", normalize=False)
    assert ds["utterances"] == EXPECTED[name][split]
    assert set(ds["source"]) == {name}
    assert len(mirror.requests) == 1
    if name == "blended_skill_talk":
        assert ds["persona"] == [["I am a nurse.", "I love the sea."]]


def test_bad_layout_is_not_cached(tmp_path, monkeypatch):
    """An (unverified) archive without the expected files raises and is deleted."""
    served = tmp_path / "served"
    served.mkdir()
    tar_gz(served / "blended_skill_talk.tar.gz", {"README": b"not the dataset\n"})
    server = Server(served)
    try:
        monkeypatch.setenv("GPT2CHAT_DOWNLOAD_BASE_URL", server.url)
        spec = dataclasses.replace(SOURCES["blended_skill_talk"], sha256=None)
        monkeypatch.setitem(SOURCES, "blended_skill_talk", spec)
        with pytest.raises(ValueError, match=r"train\.json is missing"):
            download_dataset("blended_skill_talk", cache_dir=tmp_path / "cache")
        folder = tmp_path / "cache" / "blended_skill_talk"
        assert not (folder / "complete.json").exists()
        assert not (folder / spec.filename).exists()
        assert not (folder / "extracted").exists()
        (served / "blended_skill_talk.tar.gz").write_bytes(b"garbage")
        with pytest.raises(ValueError, match="not a valid archive"):
            download_dataset("blended_skill_talk", cache_dir=tmp_path / "cache")
        assert not (folder / spec.filename).exists()
        # A gzip stream cut short or corrupted inside: still "not a valid archive"
        tar_gz(served / "blended_skill_talk.tar.gz", {"train.json": b"[]" + bytes(range(256)) * 64})
        whole = (served / "blended_skill_talk.tar.gz").read_bytes()
        for damaged in (whole[: len(whole) // 2], whole[:20] + b"\xff" * 40 + whole[60:]):
            (served / "blended_skill_talk.tar.gz").write_bytes(damaged)
            with pytest.raises(ValueError, match="not a valid archive"):
                download_dataset("blended_skill_talk", cache_dir=tmp_path / "cache")
            assert not (folder / spec.filename).exists()
    finally:
        server.stop()


def test_local_mirror_files_are_kept(archives, tmp_path, monkeypatch):
    """A file:// mirror (or a folder) is extracted from in place, never deleted."""
    monkeypatch.setenv("GPT2CHAT_DOWNLOAD_BASE_URL", archives["folder"].as_uri())
    spec = SOURCES["blended_skill_talk"]
    monkeypatch.setitem(
        SOURCES,
        "blended_skill_talk",
        dataclasses.replace(spec, sha256=archives["blended_skill_talk"]),
    )
    folder = download_dataset("blended_skill_talk", cache_dir=tmp_path)
    assert (folder / "train.json").is_file()
    assert (archives["folder"] / spec.filename).is_file()


def test_cache_of_the_older_layout_is_reused(tmp_path, monkeypatch):
    """A cache written before DownloadManager (<name>/extracted/, no "extracted" key)."""
    monkeypatch.setenv("GPT2CHAT_DOWNLOAD_BASE_URL", f"http://127.0.0.1:{free_port()}")
    spec = SOURCES["blended_skill_talk"]
    folder = tmp_path / "blended_skill_talk"
    (folder / "extracted").mkdir(parents=True)
    (folder / "extracted" / "train.json").write_text("[]")
    (folder / "complete.json").write_text(json.dumps({"sha256": spec.sha256}))
    assert download_dataset("blended_skill_talk", cache_dir=tmp_path) == folder / "extracted"
