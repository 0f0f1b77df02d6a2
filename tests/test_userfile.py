"""moelab.userfile: the one reader of users' files refuses every hostile file with one line, and reads YAML 1.2."""

import os
import threading

import pytest

from moelab.errors import MoelabError
from moelab.userfile import MAX_DEPTH, MAX_INT_DIGITS, load_user_file, parse_json, parse_yaml, read_user_text

ALIAS_BOMB_8 = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(7))


def refusal(call, *args) -> str:
    with pytest.raises(MoelabError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message and len(message) < 500
    return message


def test_reads_json_and_yaml(tmp_path):
    (tmp_path / "a.json").write_text('{"x": [1, 2.5, "s", null, true]}')
    (tmp_path / "a.yaml").write_text("x: [1, 2.5, s, null, true]\n")
    assert load_user_file(tmp_path / "a.json") == load_user_file(tmp_path / "a.yaml") == {"x": [1, 2.5, "s", None,
                                                                                               True]}


@pytest.mark.parametrize("text, value", [
    ("2e9", 2e9), ("1.0e+3", 1000.0), ("-1E-2", -0.01), (".5", 0.5), ("5.", 5.0), ("12", 12), ("012", 12),
    ("0x1F", 31), ("0o17", 15), ("+3", 3), ("true", True), ("False", False), ("yes", "yes"), ("off", "off"),
    ("1:30", "1:30"), ("1_000", "1_000"), ("2024-01-01", "2024-01-01"), ("~", None), ("0b11", "0b11"),
])
def test_yaml_scalars_resolve_as_yaml_1_2(text, value):
    assert parse_yaml(f"k: {text}") == {"k": value}
    assert type(parse_yaml(f"k: {text}")["k"]) is type(value)


def test_yaml_nan_and_inf_parse_for_the_model_to_refuse():
    got = parse_yaml("a: .nan\nb: -.inf\n")
    assert got["a"] != got["a"] and got["b"] == float("-inf")


def test_a_directory_a_fifo_and_a_device_are_refused_without_reading(tmp_path):
    assert "a directory" in refusal(load_user_file, tmp_path)
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    result = {}
    reader = threading.Thread(target=lambda: result.setdefault("msg", refusal(load_user_file, fifo)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    if reader.is_alive():  # unblock the reader before failing, so the suite does not hang
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert "not a regular file" in result["msg"]
    assert "not a regular file" in refusal(load_user_file, "/dev/zero")


def test_missing_file_size_cap_and_bad_path(tmp_path):
    assert "not found" in refusal(load_user_file, tmp_path / "nope.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("x" * 2000)
    assert "larger than" in refusal(read_user_text, big, "file", 1000)
    assert "not a valid path" in refusal(load_user_file, "a\x00b.yaml")


def test_non_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in refusal(load_user_file, path)


@pytest.mark.parametrize("text, reason", [
    ('{"a": NaN}', "NaN is not a JSON number"),
    ('{"a": Infinity}', "Infinity is not a JSON number"),
    ('{"a": 1e400}', "out of range"),
    ('{"a": 1, "a": 2}', "duplicate key 'a'"),
    ('{"a": ' + "9" * 5000 + "}", "digits"),
    ('{"a": ' + "9" * (MAX_INT_DIGITS + 1) + "}", "digits"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested too deeply"),
    ('{"a": ', "not valid JSON"),
])
def test_json_refusals(text, reason):
    assert reason in refusal(parse_json, text, "c.json")


def test_json_at_the_depth_limit_is_read():
    depth = MAX_DEPTH
    assert parse_json("[" * depth + "]" * depth) is not None


@pytest.mark.parametrize("text, reason", [
    (ALIAS_BOMB_8, "aliases are not accepted"),
    ("a: &x 1\nb: *x\n", "aliases are not accepted"),
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' at line 3"),
    ("k: " + "9" * 5000, "5000 digits"),
    ("k: 1e400", "out of range"),
    ("- " * 100 + "x", "nested"),
    ("k: [1, 2\n", "not valid YAML"),
    ("k: !!python/object:os.system x\n", "not valid YAML"),
])
def test_yaml_refusals(text, reason):
    assert reason in refusal(parse_yaml, text, "w.yaml")


def test_refusals_name_the_file(tmp_path):
    path = tmp_path / "hw.yaml"
    path.write_text("a: 1\na: 2\n")
    assert refusal(load_user_file, path).startswith(f"{path}: ")
