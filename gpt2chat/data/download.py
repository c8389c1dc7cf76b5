"""Download, verify and extract the public dialogue datasets (used when ``data_dir`` is None).

Every archive is fetched from its canonical source (table :data:`SOURCES`) by a
:class:`datasets.DownloadManager`, which downloads, records the SHA-256 and extracts; the hash is
checked against the one published by the project that distributes the archive. The extracted
files are reused on later calls without touching the network.

Cache layout (``<root>`` is ``cache_dir``, else ``$GPT2CHAT_CACHE``, else
``datasets.config.HF_DATASETS_CACHE / "gpt2chat"``)::

    <root>/<name>/downloads/              the DownloadManager's cache: the archive (removed
                                          once extracted) and downloads/extracted/<hash>/
    <root>/<name>/complete.json           written last: where the extraction is, its hash

Environment variables:

- ``GPT2CHAT_CACHE``: the cache root (``cache_dir`` wins over it).
- ``GPT2CHAT_DOWNLOAD_BASE_URL``: a mirror (``http(s)://``, ``file://`` or a folder); every
  archive is then fetched from ``<base>/<filename>``. A mirror must serve the identical files:
  the checksum still applies.
"""

from __future__ import annotations

import gzip
import json
import logging
import lzma
import os
import shutil
import tarfile
import time
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CACHE_ENV = "GPT2CHAT_CACHE"
BASE_URL_ENV = "GPT2CHAT_DOWNLOAD_BASE_URL"
MARKER = "complete.json"


@dataclass(frozen=True)
class DownloadSpec:
    """Where a dataset's archive comes from and what it holds once extracted.

    Attributes:
        url: the canonical download URL.
        filename: the archive's file name (also the name fetched from a mirror).
        sha256: the archive's published SHA-256, or ``None`` when no published hash was found
            (the download is then used unverified, with a warning).
        subdir: the folder, relative to the extraction root, that directly holds the dataset's
            files (``""``: the extraction root itself). :func:`download_dataset` returns it.
        check_file: a file that must exist in ``subdir`` after extraction.
        source: where the URL and hash were taken from.
    """

    url: str
    filename: str
    sha256: str | None
    subdir: str
    check_file: str
    source: str = ""


#: The canonical archives. ``parl.ai/downloads/<path>`` redirects to
#: ``dl.fbaipublicfiles.com/parlai/<path>``; the direct HTTPS address is used.
SOURCES: dict[str, DownloadSpec] = {
    # The original DailyDialog release (the one the Hugging Face `daily_dialog` script reads).
    # The returned folder `ijcnlp_dailydialog/` holds `train.zip`, `validation.zip` and
    # `test.zip` (each with `<split>/dialogues_<split>.txt` and the act/emotion label files).
    "daily_dialog": DownloadSpec(
        url="http://yanran.li/files/ijcnlp_dailydialog.zip",
        filename="ijcnlp_dailydialog.zip",
        sha256="c641e88cbf21fd7c1b57289387f9107d33fe8685a2b37fe8066b82776535ea89",
        subdir="ijcnlp_dailydialog",
        check_file="train.zip",
        source="huggingface/datasets datasets/daily_dialog/dataset_infos.json (4,475,921 bytes)",
    ),
    # The returned folder `empatheticdialogues/` holds `train.csv`, `valid.csv`, `test.csv`.
    "empathetic_dialogues": DownloadSpec(
        url="https://dl.fbaipublicfiles.com/parlai/empatheticdialogues/empatheticdialogues.tar.gz",
        filename="empatheticdialogues.tar.gz",
        sha256="56f234d77b7dd1f005fd365bb17769cfe346c3c84295b69bc069c8ccb83be03d",
        subdir="empatheticdialogues",
        check_file="train.csv",
        source="facebookresearch/ParlAI parlai/tasks/empathetic_dialogues/build.py (version "
        "'1.0'); same hash in huggingface/datasets datasets/empathetic_dialogues "
        "(28,022,709 bytes)",
    ),
    # ParlAI's Persona-Chat. The returned folder `personachat/` holds ParlAI's text files:
    # `{train,valid,test}_{self,other,both,none}_{original,revised}[_no_cands].txt`.
    "persona_chat": DownloadSpec(
        url="https://dl.fbaipublicfiles.com/parlai/personachat/personachat.tgz",
        filename="personachat.tgz",
        sha256="507cf8641d333240654798870ea584d854ab5261071c5e3521c20d8fa41d5622",
        subdir="personachat",
        check_file="train_self_original_no_cands.txt",
        source="facebookresearch/ParlAI parlai/tasks/personachat/build.py",
    ),
    # The archive's files sit at its root: the returned folder holds `train.json`,
    # `valid.json`, `test.json` (ParlAI's raw BlendedSkillTalk JSON).
    "blended_skill_talk": DownloadSpec(
        url="https://dl.fbaipublicfiles.com/parlai/blended_skill_talk/blended_skill_talk.tar.gz",
        filename="blended_skill_talk.tar.gz",
        sha256="5fbed0068ee89e2d43b93c3ecb341e784617033efa5e8e911a219d4eda6134a6",
        subdir="",
        check_file="train.json",
        source="facebookresearch/ParlAI parlai/tasks/blended_skill_talk/build.py; same hash "
        "in huggingface/datasets datasets/blended_skill_talk (38,101,408 bytes)",
    ),
}


def default_cache_root() -> Path:
    """The cache root: ``$GPT2CHAT_CACHE``, else ``<datasets cache>/gpt2chat``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "gpt2chat"


def source_url(name: str) -> str:
    """The URL the archive of ``name`` is fetched from (``$GPT2CHAT_DOWNLOAD_BASE_URL`` aware)."""
    spec = _spec(name)
    base = os.environ.get(BASE_URL_ENV, "").strip()
    if base:
        return f"{base.rstrip('/')}/{spec.filename}"
    return spec.url


def download_dataset(
    name: str,
    cache_dir: str | Path | None = None,
    *,
    timeout: float = 60.0,
) -> Path:
    """Download, verify and extract a public dataset; return the folder holding its files.

    A second call finds the extracted folder (and its completion marker) and returns it without
    any network access.

    Args:
        name: one of :data:`SOURCES` (``daily_dialog``, ``empathetic_dialogues``,
            ``persona_chat``, ``blended_skill_talk``).
        cache_dir: the cache root; the dataset goes to ``<cache_dir>/<name>``. Defaults to
            ``$GPT2CHAT_CACHE``, else ``datasets.config.HF_DATASETS_CACHE / "gpt2chat"``.
        timeout: seconds to wait for the server before giving up (per network operation).

    Returns:
        The folder that directly holds the dataset's files:

        - ``daily_dialog``: ``.../ijcnlp_dailydialog`` with ``train.zip``, ``validation.zip``,
          ``test.zip``;
        - ``empathetic_dialogues``: ``.../empatheticdialogues`` with ``train.csv``,
          ``valid.csv``, ``test.csv``;
        - ``persona_chat``: ``.../personachat`` with ParlAI's ``*_original_no_cands.txt`` etc.;
        - ``blended_skill_talk``: the extraction root, with ``train.json``, ``valid.json``,
          ``test.json``.

    Raises:
        ValueError: unknown ``name``, or the download does not match the published SHA-256.
        ConnectionError: the archive could not be downloaded.
    """
    spec = _spec(name)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)

    from filelock import FileLock

    with FileLock(str(folder) + ".lock"):
        done = _cached(folder, spec)
        if done is not None:
            logger.debug("%s: using the cached copy in %s", name, done)
            return done
        (folder / MARKER).unlink(missing_ok=True)
        shutil.rmtree(folder / "extracted", ignore_errors=True)  # the layout before DownloadManager
        downloads = folder / "downloads"
        url = source_url(name)
        try:
            extracted = _download_and_extract(url, downloads, spec, timeout=timeout)
            target = extracted / spec.subdir if spec.subdir else extracted
            if not (target / spec.check_file).is_file():
                raise ValueError(
                    f"{spec.filename} was extracted but {spec.subdir or '.'}/{spec.check_file} "
                    f"is missing: the archive does not have the layout of {spec.url}. Pass "
                    "`data_dir` with the dataset's files instead."
                )
        except BaseException:
            shutil.rmtree(downloads, ignore_errors=True)  # a bad archive must not be reused
            raise
        marker = {
            "name": name,
            "url": spec.url,
            "filename": spec.filename,
            "sha256": spec.sha256,
            "extracted": extracted.relative_to(folder).as_posix(),
            "extracted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (folder / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        logger.info("%s: ready in %s", name, target)
        return target


def pop_cache_dir(options: Mapping[str, Any], loader: str) -> str | Path | None:
    """Return ``options["cache_dir"]``; raise ``ValueError`` naming any other option.

    Loaders receive ``**options`` from :func:`gpt2chat.data.load_dialogues`; ``cache_dir`` is the
    only option that is not a loader's own keyword argument.
    """
    unknown = sorted(k for k in options if k != "cache_dir")
    if unknown:
        raise ValueError(
            f"{loader}: unknown option(s) {', '.join(map(repr, unknown))}. Check the spelling; "
            f"see help({loader}) for the options it accepts (plus `cache_dir`)."
        )
    return options.get("cache_dir")


# --------------------------------------------------------------------------------------------
# internals


def _spec(name: str) -> DownloadSpec:
    if name not in SOURCES:
        raise ValueError(
            f"No download source for dataset {name!r}: downloadable datasets are "
            f"{', '.join(sorted(SOURCES))}. For other data pass `data_dir`."
        )
    return SOURCES[name]


def _cached(folder: Path, spec: DownloadSpec) -> Path | None:
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if spec.sha256 is not None and info.get("sha256") != spec.sha256:
        logger.info("%s: the cached copy is another version; downloading again", folder.name)
        return None
    extracted = folder / info.get("extracted", "extracted")  # "extracted": the older layout
    target = extracted / spec.subdir if spec.subdir else extracted
    return target if (target / spec.check_file).is_file() else None


def _download_and_extract(url: str, downloads: Path, spec: DownloadSpec, *, timeout: float) -> Path:
    """``DownloadManager.download`` (the SHA-256 recorded and checked), then ``extract``;
    the downloaded archive is removed once extracted. Returns the extraction folder."""
    import aiohttp
    from datasets import DownloadConfig, DownloadManager

    config = DownloadConfig(
        cache_dir=str(downloads),
        use_etag=False,  # a downloaded archive is reused as it is (its hash is checked)
        force_extract=True,  # never reuse a partial extraction
        user_agent="gpt2chat",
        download_desc=spec.filename,
        storage_options={
            "client_kwargs": {
                "timeout": aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout)
            }
        },
    )
    manager = DownloadManager(download_config=config, record_checksums=spec.sha256 is not None)
    logger.info("Downloading %s to %s", url, downloads)
    try:
        archive = Path(manager.download(url))
    except (OSError, aiohttp.ClientError, TimeoutError) as err:
        if isinstance(err, OSError) and not _from_network(err, url):
            raise  # the local disk (full, not writable): its own error
        raise ConnectionError(
            f"Could not download {url}: {_reason(err)}. Without network access, pass `data_dir` "
            f"pointing at the dataset's local files, or set {BASE_URL_ENV} to a mirror that "
            f"serves {spec.filename}."
        ) from err
    _verify(archive, spec, url, manager.get_recorded_sizes_checksums().get(url, {}))
    try:
        extracted = Path(manager.extract(str(archive)))
    except _BAD_ARCHIVE as err:
        raise _bad_archive(spec, f"{type(err).__name__}: {err}") from err
    if extracted == archive or not extracted.is_dir():  # none recognised, or one compressed file
        raise _bad_archive(spec, "not a zip or tar archive")
    if archive.is_relative_to(downloads):  # not a file:// mirror's own file
        for leftover in (archive, Path(f"{archive}.json"), Path(f"{archive}.lock")):
            leftover.unlink(missing_ok=True)
    return extracted


def _from_network(err: OSError, url: str) -> bool:
    """Whether an ``OSError`` of the download is the server's or the connection's (fsspec
    reports any failure to reach a URL as ``FileNotFoundError(url)``)."""
    import aiohttp

    return isinstance(err, (ConnectionError, TimeoutError, aiohttp.ClientError)) or (
        isinstance(err, FileNotFoundError) and url in str(err)
    )


def _reason(err: BaseException) -> str:
    """What went wrong, from the error fsspec / aiohttp raised (or the one behind it)."""
    import aiohttp

    cause = err.__cause__ or err.__context__
    if isinstance(err, FileNotFoundError) and cause is not None:
        err = cause
    if isinstance(err, aiohttp.ClientResponseError):
        return f"HTTP error {err.status} ({err.message})"
    if isinstance(err, FileNotFoundError):  # fsspec's answer to a 404
        return "HTTP error 404 (Not Found)"
    return str(err) or type(err).__name__


def _verify(archive: Path, spec: DownloadSpec, url: str, recorded: dict) -> None:
    if spec.sha256 is None:
        logger.warning(
            "%s: no published SHA-256 is known for %s; it is used UNVERIFIED.", spec.filename, url
        )
        return
    actual = recorded.get("checksum")
    if actual != spec.sha256:
        raise ValueError(
            f"Checksum mismatch for {spec.filename} downloaded from {url}: expected sha256 "
            f"{spec.sha256}, got {actual}. The file was deleted. A mirror set with "
            f"{BASE_URL_ENV} must serve the original file unchanged."
        )


#: What a damaged archive raises while it is read (a full disk, an OSError, is not one of them).
_BAD_ARCHIVE = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
    EOFError,
    RuntimeError,  # an encrypted zip member
    NotImplementedError,  # an unknown zip compression method
)


def _bad_archive(spec: DownloadSpec, why: str) -> ValueError:
    return ValueError(
        f"{spec.filename} is not a valid archive ({why}); it was deleted, the next call "
        "downloads it again."
    )
