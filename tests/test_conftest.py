"""The suite's own guard: a test that leaves files in the working directory fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import no_files_left_in_the_working_directory, working_directory_listing


def test_a_file_left_in_the_working_directory_fails_the_test(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    left = r"left leftover\.txt, report in the working directory "
    with pytest.raises(pytest.fail.Exception, match=left), \
            no_files_left_in_the_working_directory():
        Path("leftover.txt").write_text("x")
        Path("report").mkdir()
    with no_files_left_in_the_working_directory():  # written and removed: nothing left
        Path("scratch.txt").write_text("x")
        Path("scratch.txt").unlink()


def test_tool_caches_are_not_leftovers(tmp_path):
    for name in (".pytest_cache", ".hypothesis", "__pycache__", "report"):
        (tmp_path / name).mkdir()
    assert working_directory_listing(tmp_path) == {"report"}
