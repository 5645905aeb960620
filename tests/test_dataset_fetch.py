"""`audit dataset fetch lfw`: download (resumed), checksum, safe unpacking and import, against a local server.

Nothing here reaches the internet: a small made-up archive laid out like
``lfw-deepfunneled.tgz`` is served by ``http.server`` in a thread, which
understands ``Range`` and can be told to cut a response short (a killed
connection), to ignore ``Range``, or to answer with an error.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from audit.cli import cli
from audit.data.fetch import (LFW_DEEPFUNNELED, DownloadConfig, default_source, fetch_dataset, unpack_archive)
from audit.errors import EXIT_TARGET_STOPPED, DatasetError, DownloadStopped

PEOPLE = {"Ann_Able": 3, "Bob_Baker": 2, "Cy_Cole": 1}
FAST = DownloadConfig(base_delay=0.0, max_delay=0.0, chunk_size=512, timeout=5, connect_timeout=5)


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((32, 32), 40 + seed).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def lfw_archive(extra=None) -> bytes:
    """A tar.gz laid out like lfw-deepfunneled.tgz (plus a misnamed file the importer excludes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        seed = 0
        for person, n in PEOPLE.items():
            for k in range(1, n + 1):
                add(tar, f"lfw-deepfunneled/{person}/{person}_{k:04d}.jpg", jpeg(seed))
                seed += 1
        add(tar, "lfw-deepfunneled/Cy_Cole/Someone_Else_0001.jpg", jpeg(99))
        if extra is not None:
            extra(tar)
    return buffer.getvalue()


ARCHIVE = lfw_archive()
MD5 = hashlib.md5(ARCHIVE).hexdigest()
SHA256 = hashlib.sha256(ARCHIVE).hexdigest()


class Server:
    """A local HTTP server of one file, with a log of the ``Range`` of each request."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.requests: list[str | None] = []
        self.cut_at: int | None = None          # send this many bytes of the body, then hang up
        self.cuts_left = 0
        self.ignore_range = False
        self.status: int | None = None          # answer every request with this status
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                wanted = self.headers.get("Range")
                server.requests.append(wanted)
                if server.status is not None:
                    self.send_error(server.status)
                    return
                data, start = server.data, 0
                if wanted and not server.ignore_range:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/x-gzip")
                self.end_headers()
                if server.cuts_left and server.cut_at is not None:
                    server.cuts_left -= 1
                    self.wfile.write(body[:max(server.cut_at - start, 0)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/lfw/lfw-deepfunneled.tgz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    served = Server(ARCHIVE)
    yield served
    served.close()


def fetch(*args) -> "object":
    return CliRunner().invoke(cli, ["dataset", "fetch", "lfw", *map(str, args)], catch_exceptions=False)


def folder_files(folder: Path) -> dict[str, str]:
    return {name: (folder / name).read_text(encoding="utf-8") for name in ("manifest.csv", "exclusions.csv")}


# --------------------------------------------------------------------------- the whole command

def test_fetch_imports_what_dataset_import_makes_of_the_same_files(tmp_path, server):
    dest = tmp_path / "data" / "lfw"
    done = fetch(dest, "--url", server.url, "--md5", MD5, "-q")
    assert done.exit_code == 0, done.output
    source = default_source(dest)
    assert source == tmp_path / "data" / "lfw-source"
    assert (source / "lfw-deepfunneled.tgz").is_file() and not (source / "lfw-deepfunneled.tgz.part").exists()
    assert f"SHA-256 {SHA256}" in done.output and "No labels" in done.output
    assert not list(source.glob(".unpacking-*"))
    imported = CliRunner().invoke(cli, ["dataset", "import", "lfw", str(source), str(tmp_path / "by-import"),
                                        "--images", "lfw-deepfunneled"])
    assert imported.exit_code == 0, imported.output
    assert folder_files(dest) == folder_files(tmp_path / "by-import")
    manifest = (dest / "manifest.csv").read_text()
    assert manifest.count("\n") == 1 + sum(PEOPLE.values())          # the misnamed file is excluded
    assert "Someone_Else_0001.jpg" in (dest / "exclusions.csv").read_text()


def test_a_rerun_downloads_and_unpacks_nothing_again(tmp_path, server):
    dest = tmp_path / "lfw"
    assert fetch(dest, "--url", server.url, "--md5", MD5, "-q").exit_code == 0
    again = fetch(dest, "--url", server.url, "--md5", MD5, "-q", "--overwrite")
    assert again.exit_code == 0, again.output
    assert len(server.requests) == 1
    assert "already downloaded" in again.output and "Already unpacked" in again.output


def test_a_checksum_mismatch_is_refused_deleted_and_nothing_imported(tmp_path, server):
    dest = tmp_path / "lfw"
    done = fetch(dest, "--url", server.url, "-q")        # the published MD5: not this made-up archive's
    assert done.exit_code == 2, done.output
    assert f"MD5 {MD5} where {LFW_DEEPFUNNELED.md5} was expected" in done.output
    assert "nothing was unpacked or imported" in done.output
    source = default_source(dest)
    assert not dest.exists()
    assert not (source / "lfw-deepfunneled.tgz").exists() and not (source / "lfw-deepfunneled").exists()
    wrong_sha = fetch(dest, "--url", server.url, "--md5", MD5, "--sha256", "0" * 64, "-q")
    assert wrong_sha.exit_code == 2 and "SHA-256" in wrong_sha.output and not dest.exists()


def test_a_killed_download_resumes_from_its_part_file(tmp_path, server):
    dest = tmp_path / "lfw"
    source = default_source(dest)
    source.mkdir(parents=True)
    half = len(ARCHIVE) // 2
    (source / "lfw-deepfunneled.tgz.part").write_bytes(ARCHIVE[:half])     # what a killed run left
    done = fetch(dest, "--url", server.url, "--md5", MD5, "-q")
    assert done.exit_code == 0, done.output
    assert server.requests == [f"bytes={half}-"]
    assert f"({(len(ARCHIVE) - half) / 1e6:.1f} MB this run)" in done.output
    assert (source / "lfw-deepfunneled.tgz").read_bytes() == ARCHIVE


def test_a_connection_cut_mid_file_is_retried_from_where_it_stopped(tmp_path, server):
    server.cut_at, server.cuts_left = len(ARCHIVE) // 3, 2
    summary = fetch_dataset("lfw", tmp_path / "lfw", url=server.url, md5=MD5, show_progress=False, config=FAST)
    assert summary.md5 == MD5 and summary.imported.n_images == sum(PEOPLE.values())
    # the retry resumes from the bytes written (the chunk in flight when the line dropped is asked again)
    resumed_at = int(server.requests[1].removeprefix("bytes=").rstrip("-"))
    assert server.requests[0] is None and 0 < resumed_at <= len(ARCHIVE) // 3
    assert len(server.requests) == 3


def test_a_server_that_ignores_range_gives_the_whole_file_again(tmp_path, server):
    source = default_source(tmp_path / "lfw")
    source.mkdir(parents=True)
    (source / "lfw-deepfunneled.tgz.part").write_bytes(b"x" * 100)
    server.ignore_range = True
    summary = fetch_dataset("lfw", tmp_path / "lfw", url=server.url, md5=MD5, show_progress=False, config=FAST)
    assert summary.md5 == MD5 and server.requests == ["bytes=100-"]


def test_retries_spent_keep_the_part_and_stop_with_exit_code_3(tmp_path, server):
    server.cut_at, server.cuts_left = 1000, 99
    with pytest.raises(DownloadStopped, match="rerun the same command to resume") as stopped:
        fetch_dataset("lfw", tmp_path / "lfw", url=server.url, md5=MD5, show_progress=False,
                      config=DownloadConfig(max_retries=2, base_delay=0, max_delay=0, chunk_size=512))
    assert stopped.value.exit_code == EXIT_TARGET_STOPPED
    assert len(server.requests) == 3
    part = default_source(tmp_path / "lfw") / "lfw-deepfunneled.tgz.part"
    assert part.stat().st_size == 1000                  # each retry resumed at 1000 and got nothing more
    server.cuts_left = 0
    done = fetch(tmp_path / "lfw", "--url", server.url, "--md5", MD5, "-q")
    assert done.exit_code == 0, done.output
    assert server.requests[-1] == "bytes=1000-"


def test_an_http_error_is_an_input_error_naming_the_address(tmp_path, server):
    server.status = 404
    done = fetch(tmp_path / "lfw", "--url", server.url, "--md5", MD5, "-q")
    assert done.exit_code == 2 and "HTTP 404" in done.output and server.url in done.output


def test_a_file_url_mirror_is_copied_and_verified(tmp_path):
    mirror = tmp_path / "mirror" / "lfw-deepfunneled.tgz"
    mirror.parent.mkdir()
    mirror.write_bytes(ARCHIVE)
    done = fetch(tmp_path / "lfw", "--url", mirror.as_uri(), "--md5", MD5.upper(), "-q")
    assert done.exit_code == 0, done.output
    assert (tmp_path / "lfw" / "manifest.csv").is_file()


@pytest.mark.parametrize("args, words", [(["--md5", "abc"], "--md5 'abc' is not a 32-digit"),
                                         (["--url", "ftp://x/y.tgz"], "not an http(s):// or file://")])
def test_bad_options_are_refused_before_any_download(tmp_path, args, words):
    done = fetch(tmp_path / "lfw", *args, "-q")
    assert done.exit_code == 2 and words in done.output, done.output


def test_an_occupied_destination_is_refused_before_any_download(tmp_path, server):
    (tmp_path / "lfw").mkdir()
    (tmp_path / "lfw" / "mine.txt").write_text("x")
    done = fetch(tmp_path / "lfw", "--url", server.url, "--md5", MD5, "-q")
    assert done.exit_code == 2 and "not empty" in done.output
    assert server.requests == []


# --------------------------------------------------------------------------- unpacking

def _member(name: str, kind: bytes, link: str = ""):
    def extra(tar: tarfile.TarFile, root: Path) -> None:
        info = tarfile.TarInfo(name.format(root=root))
        info.type = kind
        info.linkname = link
        if kind == tarfile.REGTYPE:
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
        else:
            tar.addfile(info)
    return extra


@pytest.mark.parametrize("extra, words", [
    (_member("lfw-deepfunneled/../../escaped.jpg", tarfile.REGTYPE), "leaves the folder"),
    (_member("{root}/absolute-escape.jpg", tarfile.REGTYPE), "an absolute path"),
    (_member("lfw-deepfunneled/Ann_Able/link.jpg", tarfile.SYMTYPE, "/etc/passwd"), "a link"),
    (_member("lfw-deepfunneled/Ann_Able/hard.jpg", tarfile.LNKTYPE, "/etc/passwd"), "a link"),
    (_member("lfw-deepfunneled/Ann_Able/pipe.jpg", tarfile.FIFOTYPE), "special file"),
])
def test_an_archive_with_a_member_that_escapes_or_is_not_a_file_is_refused_whole(tmp_path, extra, words):
    archive = tmp_path / "lfw-deepfunneled.tgz"
    archive.write_bytes(lfw_archive(lambda tar: extra(tar, tmp_path)))
    into = tmp_path / "source"
    into.mkdir()
    with pytest.raises(DatasetError, match="refusing to unpack") as refused:
        unpack_archive(archive, into, folder="lfw-deepfunneled")
    assert words in str(refused.value)
    assert sorted(p.name for p in into.iterdir()) == []                # nothing written, staging removed
    assert not (tmp_path / "escaped.jpg").exists() and not (tmp_path / "absolute-escape.jpg").exists()


def test_a_damaged_archive_is_an_input_error(tmp_path):
    archive = tmp_path / "lfw-deepfunneled.tgz"
    archive.write_bytes(ARCHIVE[: len(ARCHIVE) // 2])
    with pytest.raises(DatasetError, match="cannot be unpacked"):
        unpack_archive(archive, tmp_path, folder="lfw-deepfunneled")
    assert not (tmp_path / "lfw-deepfunneled").exists()


def test_the_published_checksum_is_the_one_the_datasets_readme_gives():
    readme = (Path(__file__).resolve().parents[1] / "datasets" / "README.md").read_text(encoding="utf-8")
    assert f"MD5 `{LFW_DEEPFUNNELED.md5}`" in readme and LFW_DEEPFUNNELED.url.rsplit("/", 1)[0] in readme


def test_the_download_shows_progress_as_plain_lines_off_a_terminal(tmp_path, server):
    done = fetch(tmp_path / "lfw", "--url", server.url, "--md5", MD5)
    assert done.exit_code == 0, done.output
    assert "Downloading lfw-deepfunneled.tgz: 1/1 (100%" in done.output
    assert "\r" not in done.output


def test_the_bytes_of_this_run_are_counted_when_a_server_starts_over(tmp_path, server):
    source = default_source(tmp_path / "lfw")
    source.mkdir(parents=True)
    (source / "lfw-deepfunneled.tgz.part").write_bytes(b"x" * 100)
    server.ignore_range = True
    summary = fetch_dataset("lfw", tmp_path / "lfw", url=server.url, md5=MD5, show_progress=False, config=FAST)
    assert summary.downloaded_bytes == len(ARCHIVE)


@pytest.mark.parametrize("header, parsed", [("bytes 100-199/1000", (100, 1000)), ("bytes */1000", (None, 1000)),
                                            ("bytes x-y/z", (None, None)), (None, (None, None))])
def test_content_range_headers_are_read_without_trusting_them(header, parsed):
    from audit.data.fetch import _content_range

    assert _content_range(header) == parsed
