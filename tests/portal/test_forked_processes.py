"""`make run`'s forked children answer as its subprocesses did: polled, waited on with a timeout, and stopped by
SIGTERM as a new process is, never by running the handler with which `make run` stops its own children."""

import os
import signal
import subprocess
import time

import pytest

from portal.forked_processes import ForkedProcess


def test_a_forked_child_reports_its_exit_status():
    child = ForkedProcess("exits", lambda: os._exit(3))
    assert child.wait(timeout=30) == 3 and child.poll() == 3


def test_a_forked_child_meets_sigterm_as_a_new_process_would(tmp_path):
    ran_in = tmp_path / "handler-ran-in"
    previous = signal.signal(signal.SIGTERM, lambda *_: ran_in.write_text(str(os.getpid())))
    try:
        child = ForkedProcess("sleeps", lambda: time.sleep(60))
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.2)
        assert child.poll() is None
        child.terminate()
        assert child.wait(timeout=30) == -signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not ran_in.exists()
