"""The run-folder lock (sslam_plugin.training.run_lock): taking it, refusing a second taker, and
its release when the holding process dies, whatever the way."""

from __future__ import annotations

import datetime
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sslam_plugin.training import run_lock

MODULE = Path(run_lock.__file__)


def holder_script(body: str) -> list:
    """``python -c``: load run_lock by its path (no fairseq import, so it starts fast), then run ``body``."""
    prelude = textwrap.dedent(
        f"""
        import importlib.util, os, sys, time
        spec = importlib.util.spec_from_file_location("run_lock", {str(MODULE)!r})
        run_lock = sys.modules["run_lock"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(run_lock)
        """
    )
    return [sys.executable, "-c", prelude + textwrap.dedent(body)]


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_holder_is_written_and_a_second_taker_is_refused_with_it(tmp_path):
    folder = tmp_path / "run"
    with run_lock.acquire(str(folder), command="train the demo") as lock:
        assert lock.held and lock.path == str(folder / run_lock.LOCK_NAME)
        holder = run_lock.read_holder(lock.path)
        assert (holder.host, holder.pid, holder.command) == (socket.gethostname(), os.getpid(), "train the demo")
        started = datetime.datetime.fromisoformat(holder.started)
        assert abs((datetime.datetime.now().astimezone() - started).total_seconds()) < 3600
        with pytest.raises(run_lock.RunFolderInUse) as refused:  # another descriptor, as another launch has
            run_lock.acquire(str(folder), advice="wait for it, or use another folder")
        message = str(refused.value)
        assert "\n" not in message
        assert message == (
            f"run folder {folder} is in use by another launch (host {socket.gethostname()}, pid {os.getpid()}, "
            f"started {holder.started}): wait for it, or use another folder"
        )
        assert refused.value.holder == holder
    assert not lock.held
    assert (folder / run_lock.LOCK_NAME).read_text() == ""  # a clean release names nobody
    with run_lock.acquire(str(folder)) as again:
        assert again.held
    lock.release()  # idempotent


def test_a_holder_that_has_not_written_yet_is_named_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "_HOLDER_WRITE_WAIT_S", 0.0)
    (tmp_path / run_lock.LOCK_NAME).touch()
    with open(tmp_path / run_lock.LOCK_NAME) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(run_lock.RunFolderInUse, match=r"\(holder unknown: it has not written its host and pid\)"):
            run_lock.acquire(str(tmp_path))


def test_kill_9_of_the_holding_process_frees_the_folder(tmp_path):
    holder = subprocess.Popen(
        holder_script(f"""
            lock = run_lock.acquire({str(tmp_path)!r}, command="holder")
            print("held", flush=True)
            time.sleep(600)
        """),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(run_lock.RunFolderInUse, match=rf"\(host {socket.gethostname()}, pid {holder.pid}, started "):
            run_lock.acquire(str(tmp_path))
    finally:
        holder.kill()  # SIGKILL: no release, no cleanup; the kernel drops the lock
        holder.wait()
        holder.stdout.close()
    assert run_lock.read_holder(str(tmp_path / run_lock.LOCK_NAME)).pid == holder.pid  # stale words, no lock
    with run_lock.acquire(str(tmp_path)) as lock:
        assert lock.held and run_lock.read_holder(lock.path).pid == os.getpid()


def test_a_forked_child_does_not_keep_the_lock_after_its_parent_dies(tmp_path):
    """A DataLoader worker forked by a single-process run must not hold the folder once the run is gone."""
    parent = subprocess.run(
        holder_script(f"""
            lock = run_lock.acquire({str(tmp_path)!r})
            child = os.fork()
            if child == 0:
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, 1), os.dup2(null, 2)  # leave the pipes the test reads to EOF
                assert not lock.held
                lock.release()  # a no-op in the child: it must not unlock the parent's lock
                time.sleep(600)
                os._exit(0)
            print(child, flush=True)
            os._exit(0)  # the parent dies without releasing; only the kernel frees its lock
        """),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert parent.returncode == 0, parent.stderr
    child = int(parent.stdout.strip())
    try:
        assert is_running(child)
        with run_lock.acquire(str(tmp_path)) as lock:
            assert lock.held
    finally:
        os.kill(child, signal.SIGKILL)


def test_release_by_a_forked_child_leaves_the_parents_lock(tmp_path):
    lock = run_lock.acquire(str(tmp_path))
    try:
        pid = os.fork()
        if pid == 0:  # the child: release must not unlock (LOCK_UN would unlock the shared open file)
            try:
                lock.release()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert lock.held
        with pytest.raises(run_lock.RunFolderInUse):
            run_lock.acquire(str(tmp_path))
    finally:
        lock.release()


def test_a_filesystem_without_locks_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock.fcntl, "flock", no_locks)
    lock = run_lock.acquire(str(tmp_path))
    assert not lock.held
    assert "does not support file locks, so a second launch" in caplog.text
    lock.release()
