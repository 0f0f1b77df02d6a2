"""User corpora that are not what they claim: FIFOs, devices, oversized files, hostile JSON lines.

Each is one line (MoelabError), never a hang or a traceback; what the loader accepted before still loads.
"""

import os
import subprocess
import sys
import threading

import pytest

from moelab.data import loading
from moelab.data.loading import load_corpus
from moelab.errors import MoelabError

TEXT = "A paragraph of plain text that is long enough to be a document.\n"


def loads_within(path, seconds: float = 30):
    """load_corpus(path) in a thread: the old loader blocked on a FIFO, so a regression fails, not hangs."""
    outcome = {}

    def run():
        try:
            outcome["docs"] = load_corpus(path)
        except MoelabError as e:
            outcome["error"] = str(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    return worker.is_alive(), outcome


def test_a_fifo_as_the_corpus_is_refused(tmp_path):
    fifo = tmp_path / "corpus.txt"
    os.mkfifo(fifo)
    blocked, outcome = loads_within(fifo)
    if blocked:
        with open(fifo, "w"):
            pass
        pytest.fail("load_corpus blocked on a FIFO")
    assert "not a regular file" in outcome["error"]


def test_a_fifo_named_txt_in_a_corpus_folder_is_refused(tmp_path):
    (tmp_path / "good.txt").write_text(TEXT)
    os.mkfifo(tmp_path / "trap.txt")
    blocked, outcome = loads_within(tmp_path)
    if blocked:
        with open(tmp_path / "trap.txt", "w"):
            pass
        pytest.fail("load_corpus blocked on a FIFO in the folder")
    assert "trap.txt" in outcome["error"] and "not a regular file" in outcome["error"]


def test_a_domain_folder_skips_fifos_and_devices(tmp_path):
    domain = tmp_path / "prose"
    domain.mkdir()
    (domain / "a.md").write_text(TEXT)
    os.mkfifo(domain / "pipe")
    (domain / "zero").symlink_to("/dev/zero")
    blocked, outcome = loads_within(tmp_path)
    assert not blocked
    assert [d.name for d in outcome["docs"]] == ["a.md"]


def test_dev_zero_as_the_corpus_is_refused_unread(tmp_path):
    """The old loader read /dev/zero until memory ran out: run in a child with a 2 GB address-space cap."""
    (tmp_path / "corpus.txt").symlink_to("/dev/zero")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "from moelab.data.loading import load_corpus; from moelab.errors import MoelabError\n"
            "try:\n    load_corpus(sys.argv[1])\nexcept MoelabError as e:\n    print(e); sys.exit(2)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "corpus.txt")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "not a regular file" in done.stdout


def test_a_file_over_the_cap_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "MAX_CORPUS_FILE_BYTES", 1000)
    (tmp_path / "big.txt").write_text("x" * 1001)
    with pytest.raises(MoelabError, match=r"big\.txt: corpus file is larger than"):
        load_corpus(tmp_path / "big.txt")
    (tmp_path / "big.txt").write_text("x" * 999)
    assert load_corpus(tmp_path / "big.txt")


def test_the_cap_is_documented_and_generous():
    assert loading.MAX_CORPUS_FILE_BYTES == 256 * 2**20
    assert "MAX_CORPUS_FILE_BYTES" in loading.__doc__


@pytest.mark.parametrize("line, words", [
    ('{"text": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),  # RecursionError before
    ('{"text": "a", "n": ' + "9" * 5000 + "}", "digits"),  # int-digit ValueError before
    ('{"text": "a", "text": "b"}', "duplicate key"),
])
def test_hostile_jsonl_lines(tmp_path, line, words):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(MoelabError, match=words) as info:
        load_corpus(path)
    assert "c.jsonl:2" in str(info.value) and "\n" not in str(info.value)


def test_non_utf8_handling_is_kept(tmp_path):
    """A .txt or .jsonl must be UTF-8 (one line if not); a domain folder's binary files are skipped."""
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(MoelabError, match="not a UTF-8 text file"):
        load_corpus(tmp_path / "latin.txt")
    domain = tmp_path / "d" / "prose"
    domain.mkdir(parents=True)
    (domain / "ok.txt").write_text(TEXT)
    (domain / "blob.bin").write_bytes(b"\x00\x01\xff")
    (domain / "latin.txt").write_bytes(b"caf\xe9\n")
    assert [d.name for d in load_corpus(tmp_path / "d")] == ["ok.txt"]
