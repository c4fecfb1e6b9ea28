"""A job's files are written all or none."""
import json
import math
import os
import stat

import pytest

from ppl_vae.jobs import check_output_dir, check_output_file, json_bytes, staged_directory, write_json


def test_a_new_directory_appears_complete(tmp_path):
    with staged_directory(tmp_path / "out" / "gap") as stage:
        (stage / "a.json").write_text("{}")
        (stage / "sub").mkdir()
        (stage / "sub" / "b.png").write_bytes(b"png")
        assert not (tmp_path / "out" / "gap").exists()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "out", "out/gap", "out/gap/a.json", "out/gap/sub", "out/gap/sub/b.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out" / "gap").stat().st_mode) == 0o777 & ~umask


def test_an_existing_directory_keeps_its_other_files(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / "a.json").write_text("old")
    with staged_directory(tmp_path) as stage:
        (stage / "a.json").write_text("new")
    assert (tmp_path / "keep.txt").read_text() == "mine" and (tmp_path / "a.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "keep.txt"]


def test_an_error_while_writing_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="half-way"):
        with staged_directory(tmp_path / "out") as stage:
            (stage / "a.json").write_text("{}")
            raise RuntimeError("half-way")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_move_removes_the_files_it_added(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    real, moved = os.replace, []

    def full_disk_on_the_second(src, dst):
        if moved:
            raise OSError(28, "No space left on device", str(dst))
        moved.append(dst)
        real(src, dst)

    monkeypatch.setattr(os, "replace", full_disk_on_the_second)
    with pytest.raises(OSError, match="No space left"):
        with staged_directory(tmp_path / "out") as stage:
            (stage / "a.json").write_text("{}")
            (stage / "b.md").write_text("")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep.txt", "out"]


def test_output_paths_are_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="Expected --out '.*file' to be a directory, but it is a file"):
        check_output_dir(tmp_path / "file", "--out")
    with pytest.raises(ValueError, match="under a directory, but '.*file' is a file"):
        check_output_dir(tmp_path / "file" / "sub")
    with pytest.raises(ValueError, match="to be a file, but it is a directory"):
        check_output_file(tmp_path)
    with pytest.raises(ValueError, match="is a file"):
        with staged_directory(tmp_path / "file"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_json_is_strict(tmp_path):
    """Python's json writes NaN and Infinity, which are not JSON; reports write null instead."""
    obj = {"a": math.nan, "b": [1.0, -math.inf, 2], "c": (math.inf,), "d": "p̂"}
    assert json.loads(json_bytes(obj)) == {"a": None, "b": [1.0, None, 2], "c": [None], "d": "p̂"}
    path = write_json(tmp_path / "r.json", obj)
    assert b"NaN" not in path.read_bytes() and b"Infinity" not in path.read_bytes()
