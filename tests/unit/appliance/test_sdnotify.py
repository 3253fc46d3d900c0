"""sd_notify for vm-appliance.service (Type=notify): one datagram to $NOTIFY_SOCKET,
READY=1 only once the API answers, nothing at all without systemd."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from appliance import sdnotify
from appliance.config import Config


@pytest.fixture
def listener(tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_notify_sends_one_datagram(listener):
    assert sdnotify.notify("READY=1\nSTATUS=up")
    assert listener.recv(4096) == b"READY=1\nSTATUS=up"


def test_an_abstract_socket_is_named_with_an_at(monkeypatch):
    name = f"vmapp-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STOPPING=1")
        assert sock.recv(100) == b"STOPPING=1"


def test_without_systemd_nothing_is_sent_and_no_thread_waits(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.notify("READY=1")
    assert sdnotify.notify_when_ready(Config(home=tmp_path), threading.Event()) is None
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert not sdnotify.notify("READY=1")  # refused: logged, not raised


def test_ready_is_sent_once_the_api_answers_and_not_before(listener, tmp_path):
    answers = iter([False, False, True])
    asked = []

    def ready(config):
        asked.append(time.monotonic())
        return next(answers)

    thread = sdnotify.notify_when_ready(Config(home=tmp_path), threading.Event(), 0.05, ready)
    thread.join(5)
    assert len(asked) == 3
    message = listener.recv(4096).decode()
    assert message.startswith("READY=1\nSTATUS=serving on 127.0.0.1:8080")


def test_a_stop_before_ready_sends_nothing(listener, tmp_path):
    stopping = threading.Event()
    thread = sdnotify.notify_when_ready(Config(home=tmp_path), stopping, 0.05, lambda c: False)
    stopping.set()
    thread.join(5)
    assert not thread.is_alive()
    listener.settimeout(0.2)
    with pytest.raises(TimeoutError):
        listener.recv(100)


def test_api_ready_is_false_while_nothing_listens(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        config = Config(home=tmp_path, listen=f"127.0.0.1:{port}")
        config.prepare()
        config.save()
        assert not sdnotify.api_ready(config)


def test_stderr_is_the_journal_only_when_journal_stream_names_it(monkeypatch, tmp_path):
    stat = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
    assert sdnotify.stderr_is_journal()
    monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino + 1}")
    assert not sdnotify.stderr_is_journal()  # inherited from elsewhere: not our stderr
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not sdnotify.stderr_is_journal()


def journal_lines(code: str, journal: bool) -> str:
    """What a process that configure_logging()s writes to its stderr (a file
    here), with JOURNAL_STREAM naming that file or not."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    script = ("import logging, os, sys\n"
              "if sys.argv[1] == 'yes':\n"
              "    st = os.fstat(2); os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'\n"
              "from appliance import sdnotify\n"
              "sdnotify.configure_logging()\n" + code)
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["PYTHONPATH"] = str(root)
    result = subprocess.run([sys.executable, "-c", script, "yes" if journal else "no"],
                            capture_output=True, text=True, env=env, timeout=60, check=True)
    return result.stderr


LOG_SOME = """
log = logging.getLogger("vmctl.serve")
log.info("serving on x")
log.warning("consoles exited with -9; restarting")
log.debug("not shown")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("reconcile failed")
"""


def test_under_the_journal_each_line_carries_its_priority_and_no_timestamp():
    lines = journal_lines(LOG_SOME, journal=True).splitlines()
    assert lines[0] == "<6>vmctl.serve INFO serving on x"
    assert lines[1] == "<4>vmctl.serve WARNING consoles exited with -9; restarting"
    assert lines[2] == "<3>vmctl.serve ERROR reconcile failed"
    # the traceback's lines are the error's too, not info
    assert len(lines) > 4 and all(line.startswith("<3>") for line in lines[3:])
    assert lines[-1] == "<3>ZeroDivisionError: division by zero"


def test_elsewhere_lines_are_timestamped_without_a_prefix():
    lines = journal_lines(LOG_SOME, journal=False).splitlines()
    assert lines[0].endswith(" vmctl.serve INFO serving on x") and lines[0][:4].isdigit()
    assert not any(line.startswith("<") for line in lines)


def test_syslog_priorities_of_the_levels():
    import logging

    levels = (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)
    assert [sdnotify.syslog_priority(level) for level in levels] == [2, 3, 4, 6, 7]


GUNICORN_LOGS = """
from gunicorn.config import Config as GunicornConfig
import appliance.api.gunicorn_conf as conf
print(getattr(conf, "logger_class", "default"), file=sys.stderr)
from gunicorn.util import load_class
logger = load_class(getattr(conf, "logger_class", "gunicorn.glogging.Logger"))(GunicornConfig())
logger.error("Worker (pid:%s) was sent SIGKILL! Perhaps out of memory?", 7)
logger.info("Booting worker with pid: %s", 8)
"""


def test_gunicorn_lines_carry_their_priority_under_the_journal_only():
    lines = journal_lines(GUNICORN_LOGS, journal=True).splitlines()
    assert lines[0] == "appliance.api.gunicorn_journal.JournalLogger"
    assert lines[1].startswith("<3>[") and lines[1].endswith(
        "] [ERROR] Worker (pid:7) was sent SIGKILL! Perhaps out of memory?")
    assert lines[2].startswith("<6>[") and lines[2].endswith("] [INFO] Booting worker with pid: 8")
    lines = journal_lines(GUNICORN_LOGS, journal=False).splitlines()
    assert lines[0] == "default"
    assert lines[1].startswith("[20") and "] [ERROR] Worker (pid:7)" in lines[1]
