"""fastclv.files: a write lands whole or not at all, and leaves no temporary file behind."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fastclv.files import TEMPORARY_GLOB, atomic_write, temporary

if TYPE_CHECKING:
    from pathlib import Path


def test_a_finished_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with atomic_write(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the block ends
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_a_failed_write_leaves_the_file_as_it_was(tmp_path: Path, error: type[BaseException]) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")

    def write_half() -> None:
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise error

    with pytest.raises(error):
        write_half()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_temporary_names_are_hidden_unique_and_matched_by_the_sweep_glob(tmp_path: Path) -> None:
    names = {temporary(tmp_path / "customers.parquet").name for _ in range(50)}
    assert len(names) == 50
    for name in names:
        (tmp_path / name).touch()
    (tmp_path / "customers.parquet").touch()
    assert sorted(p.name for p in tmp_path.glob(TEMPORARY_GLOB)) == sorted(names)
