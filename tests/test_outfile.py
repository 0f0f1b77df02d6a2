"""moelab.outfile: a file the user names for moelab to write is checked before any work and written whole."""

import os

import pytest

from moelab.cli import main
from moelab.errors import MoelabError
from moelab.outfile import check_output_file, write_atomically


@pytest.mark.parametrize("make, match", [
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.symlink_to("/dev/null"), "not a regular file"),
])
def test_refuses_what_a_rename_would_replace(tmp_path, make, match):
    target = tmp_path / "out.png"
    make(target)
    with pytest.raises(MoelabError, match=match):
        check_output_file(target, "--plot")


def test_refuses_a_device_a_missing_folder_and_a_name_too_long(tmp_path):
    with pytest.raises(MoelabError, match="not a regular file"):
        check_output_file("/dev/null", "--out")
    with pytest.raises(MoelabError, match="does not exist"):
        check_output_file(tmp_path / "nowhere" / "x.yaml", "--out")
    with pytest.raises(MoelabError, match="longer than the file system allows|too long"):
        check_output_file(tmp_path / ("x" * 300 + ".yaml"), "--out")


def test_writes_a_new_or_regular_file_whole(tmp_path):
    target = check_output_file(tmp_path / "a.yaml", "--out")
    write_atomically(target, "one: 1\n")
    write_atomically(target, b"two: 2\n")
    assert target.read_text() == "two: 2\n" and os.listdir(tmp_path) == ["a.yaml"]


def test_frontier_plot_onto_a_device_is_one_line_and_exit_2(capsys):
    assert main(["frontier", "mistral-7b", "--gpus", "1", "--plot", "/dev/full"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a regular file" in err and os.path.exists("/dev/full")


def test_calibrate_out_onto_a_device_is_refused_before_any_work(capsys):
    assert main(["calibrate", "--out", "/dev/full"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a regular file" in err and os.path.exists("/dev/full")
