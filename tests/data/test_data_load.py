"""load_corpus: domain folders, .txt, .jsonl, folders of files, and one clear error per bad input."""

import json

import pytest

from moelab.data import Document, load_corpus
from moelab.data.loading import MIN_BLOCK_CHARS, text_blocks
from moelab.errors import MoelabError


def test_folder_of_domain_subfolders(tmp_path):
    (tmp_path / "legal" / "sub").mkdir(parents=True)
    (tmp_path / "legal" / "a.md").write_text("contract one")
    (tmp_path / "legal" / "sub" / "b.txt").write_text("clause two ünïcode")
    (tmp_path / "legal" / ".hidden").write_text("secret")
    (tmp_path / "legal" / "blob.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "legal" / "empty.txt").write_text("  \n")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "x.py").write_text("print(1)\n")
    (tmp_path / "notes.md").write_text("ignored: not .txt/.jsonl")
    docs = load_corpus(tmp_path)
    assert docs == [Document("code", "x.py", "print(1)\n"), Document("legal", "a.md", "contract one"),
                    Document("legal", "sub/b.txt", "clause two ünïcode")]
    assert load_corpus(str(tmp_path)) == docs


def test_txt_file_blocks(tmp_path):
    paragraphs = [f"paragraph {i} " + "word " * 100 for i in range(30)]  # ~510 chars each
    path = tmp_path / "novel.txt"
    path.write_text("\n\n".join(paragraphs))
    docs = load_corpus(path)
    assert len(docs) > 3 and {d.domain for d in docs} == {"novel"}
    assert all(len(d.text) >= MIN_BLOCK_CHARS for d in docs)
    assert len({d.name for d in docs}) == len(docs)
    rejoined = [p for d in docs for p in d.text.strip().split("\n\n") if p]
    assert [p.strip() for p in rejoined] == [p.strip() for p in paragraphs]
    small = tmp_path / "short.txt"
    small.write_text("one line\n\ntwo line\n")
    assert [d.text for d in load_corpus(small)] == ["one line\n\ntwo line\n"]
    assert text_blocks("no blank lines at all") == ["no blank lines at all\n"]


def test_jsonl_file_and_folder_of_files(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"text": "alpha", "domain": "greek"}, {"text": "plain"}, {"text": "named", "name": "n1", "domain": "g"}]
    path.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n")
    docs = load_corpus(path)
    assert docs == [Document("greek", "data.jsonl:1", "alpha"), Document("default", "data.jsonl:2", "plain"),
                    Document("g", "n1", "named")]
    (tmp_path / "poems.txt").write_text("roses are red\n\nviolets are blue\n")
    both = load_corpus(tmp_path)
    assert both[:3] == docs and [d.domain for d in both[3:]] == ["poems"]


@pytest.mark.parametrize("content, message", [
    ('{"text": "ok"}\n{"text": broken\n', "bad.jsonl:2: not valid JSON"),
    ('{"text": "ok"}\n["a list"]\n', 'bad.jsonl:2: expected an object with a string "text"'),
    ('{"text": 5}\n', "bad.jsonl:1:"),
    ('{"text": "x", "domain": ""}\n', "bad.jsonl:1:"),
])
def test_bad_jsonl_lines(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(MoelabError, match=message.replace("[", r"\[")) as info:
        load_corpus(path)
    assert "\n" not in str(info.value)


def test_errors(tmp_path):
    with pytest.raises(MoelabError, match="no such corpus"):
        load_corpus(tmp_path / "missing")
    with pytest.raises(MoelabError, match="empty"):
        load_corpus(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "blank.txt").write_text("\n\n")
    with pytest.raises(MoelabError, match="empty"):
        load_corpus(tmp_path)
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n")
    with pytest.raises(MoelabError, match="unsupported"):
        load_corpus(csv)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(MoelabError, match="not a UTF-8"):
        load_corpus(binary)
