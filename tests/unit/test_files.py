"""llmops_dagster.files: atomic writes (whole file or old file, synced before the rename, no temp
left over, the mode set before any byte), folder publishing, and the cross-process lock."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llmops_dagster import files
from llmops_dagster.files import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    file_lock,
    publish_dir,
)

pytestmark = pytest.mark.unit


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_json_replaces_the_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": [1, 2], "ratio": "p95 ÷ p95"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"b": [1, 2], "ratio": "p95 ÷ p95"}
    assert path.read_text(encoding="utf-8").endswith("}\n")
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_unserialisable_json_raises_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    atomic_write_json(path, {"b": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"c": object()})
    assert json.loads(path.read_text()) == {"b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_failed_rename_removes_the_temp_file_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.json"
    atomic_write_text(path, "old")

    def refuse(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]


def test_the_data_is_synced_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash right after the rename must not leave an empty file under the final name."""
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(
        files.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))
    )
    atomic_write_bytes(tmp_path / "x.bin", b"\x00\x01")
    assert calls[:2] == ["fsync", "replace"]
    assert (tmp_path / "x.bin").read_bytes() == b"\x00\x01"


def test_modes_default_to_a_shared_file_and_a_private_file_stays_private(tmp_path: Path) -> None:
    shared = atomic_write_text(tmp_path / "results.json", "{}")
    private = atomic_write_json(tmp_path / "keys.json", {"keys": []}, mode=0o600)
    assert (_mode(shared), _mode(private)) == (0o644, 0o600)
    atomic_write_json(private, {"keys": [1]}, mode=0o600)  # a rewrite keeps it private
    assert _mode(private) == 0o600


def test_publish_dir_builds_once_and_keeps_the_first_copy(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "model"
    built: list[Path] = []

    def build(folder: Path) -> None:
        built.append(folder)
        (folder / "config.json").write_text("{}")

    assert publish_dir(target, build, complete_marker="config.json") == target
    assert publish_dir(target, build, complete_marker="config.json") == target
    assert len(built) == 1 and not built[0].exists()  # the temp folder was renamed away
    assert (target / "config.json").read_text() == "{}"
    assert _mode(target) == 0o755
    assert [p.name for p in target.parent.iterdir()] == ["model"]


def test_publish_dir_refuses_an_incomplete_build_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with pytest.raises(RuntimeError, match=r"did not produce config\.json"):
        publish_dir(target, lambda folder: None, complete_marker="config.json")
    assert list(tmp_path.iterdir()) == []


def test_file_lock_excludes_a_second_holder_until_released(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "x.lock"
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with file_lock(lock):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    with pytest.raises(TimeoutError, match=r"x\.lock"), file_lock(lock, timeout_s=0.2):
        pass
    release.set()
    thread.join(10)
    with file_lock(lock, timeout_s=5):
        pass


def test_file_lock_of_a_killed_process_is_released(tmp_path: Path) -> None:
    """The kernel drops the lock of a dead holder: a crash never leaves a stale lock."""
    lock = tmp_path / "x.lock"
    ready = tmp_path / "ready"
    code = (
        "import sys, time, pathlib\n"
        "from llmops_dagster.files import file_lock\n"
        "with file_lock(pathlib.Path(sys.argv[1])):\n"
        "    pathlib.Path(sys.argv[2]).touch()\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock), str(ready)])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "holder did not start"
            time.sleep(0.05)
        with pytest.raises(TimeoutError), file_lock(lock, timeout_s=0.2):
            pass
    finally:
        proc.kill()
        proc.wait(10)
    with file_lock(lock, timeout_s=5):
        pass
