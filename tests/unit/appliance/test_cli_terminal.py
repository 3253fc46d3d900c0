"""vmctl console's terminal side (appliance/cli/terminal.py) with a fake socket:
the escape byte wherever a read puts it, the far end closing, the terminal
restored however the session ends."""
from __future__ import annotations

import contextlib
import os
import queue
import signal
import termios
import threading
import time

import pytest

from appliance.cli import terminal
from appliance.cli.terminal import ConsoleClosed


class FakeSocket:
    """A console socket: what the pump sent, what the 'server' sends (bytes, or
    a ConsoleClosed to raise), and whether the pump closed it."""

    def __init__(self):
        self.sent: list[bytes] = []
        self.incoming: queue.Queue = queue.Queue()
        self.closed = threading.Event()

    def send(self, data: bytes) -> None:
        if self.closed.is_set():
            raise ConsoleClosed(1006, "closed")
        self.sent.append(data)

    def recv(self) -> bytes:
        item = self.incoming.get()
        if isinstance(item, ConsoleClosed):
            raise item
        return item

    def close(self) -> None:
        self.closed.set()
        self.incoming.put(ConsoleClosed(1000, ""))

    def wait_sent(self, total: bytes, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while b"".join(self.sent) != total:
            assert time.monotonic() < deadline, self.sent
            time.sleep(0.01)


@pytest.fixture
def pipes():
    """(stdin's write end, stdin's read end, stdout's write end, stdout's read end)."""
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    yield in_write, in_read, out_write, out_read
    for fd in (in_read, in_write, out_read, out_write):
        with contextlib.suppress(OSError):
            os.close(fd)


def run_pump(sock, in_fd, out_fd, interactive=True):
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(outcome=terminal.pump(sock, in_fd, out_fd, interactive=interactive)))
    thread.start()
    return thread, result


def read_until(fd: int, expected: bytes, timeout: float = 5) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while expected not in got:
        assert time.monotonic() < deadline, got
        got += os.read(fd, 4096)
    return got


def test_the_escape_detaches_when_it_comes_in_a_read_of_its_own(pipes):
    in_write, in_read, out_write, _ = pipes
    sock = FakeSocket()
    thread, result = run_pump(sock, in_read, out_write)
    os.write(in_write, b"uname -r\r")
    sock.wait_sent(b"uname -r\r")
    os.write(in_write, b"\x1d")
    thread.join(5)
    assert result["outcome"].how == "detached"
    assert sock.sent == [b"uname -r\r"] and sock.closed.is_set()


def test_the_escape_inside_a_read_sends_what_precedes_it_and_drops_the_rest(pipes):
    in_write, in_read, out_write, _ = pipes
    sock = FakeSocket()
    thread, result = run_pump(sock, in_read, out_write)
    os.write(in_write, b"ab")
    sock.wait_sent(b"ab")
    os.write(in_write, b"c\x1dnot sent")
    thread.join(5)
    assert result["outcome"].how == "detached"
    assert sock.sent == [b"ab", b"c"]


def test_other_control_bytes_go_to_the_guest(pipes):
    """^C, ^D, ^[ ... are the guest's: only ^] is vmctl's."""
    in_write, in_read, out_write, _ = pipes
    sock = FakeSocket()
    thread, result = run_pump(sock, in_read, out_write)
    keys = bytes(b for b in range(32) if b != terminal.ESCAPE)
    os.write(in_write, keys)
    sock.wait_sent(keys)
    os.write(in_write, b"\x1d")
    thread.join(5)
    assert result["outcome"].how == "detached"


def test_piped_stdin_is_forwarded_verbatim_until_its_end_and_the_answer_printed(pipes, monkeypatch):
    monkeypatch.setattr(terminal, "QUIET_AFTER_EOF", 0.3)
    in_write, in_read, out_write, out_read = pipes
    sock = FakeSocket()
    thread, result = run_pump(sock, in_read, out_write, interactive=False)
    os.write(in_write, b"printf '\x1d'\n")  # a script's bytes: no escape
    sock.wait_sent(b"printf '\x1d'\n")
    os.close(in_write)
    time.sleep(0.1)
    sock.incoming.put(b"the answer\r\n")  # after stdin's end: still printed
    thread.join(5)
    assert not thread.is_alive() and result["outcome"].how == "eof"
    assert read_until(out_read, b"the answer\r\n") == b"the answer\r\n"


def test_output_reaches_stdout_and_the_far_end_closing_ends_the_pump(pipes):
    in_write, in_read, out_write, out_read = pipes
    sock = FakeSocket()
    thread, result = run_pump(sock, in_read, out_write)
    sock.incoming.put(b"web1:~# ")
    assert read_until(out_read, b"web1:~# ") == b"web1:~# "
    sock.incoming.put(ConsoleClosed(1011, "web1's console stream ended"))
    thread.join(5)  # no key pressed: the pump still notices
    assert not thread.is_alive()
    outcome = result["outcome"]
    assert (outcome.how, outcome.code, outcome.reason) == ("closed", 1011, "web1's console stream ended")


def test_stdout_going_away_ends_the_pump(pipes):
    in_write, in_read, out_write, out_read = pipes
    os.close(out_read)  # `vmctl console web1 | head -1`, and head has left
    sock = FakeSocket()
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python sets it up
    try:
        thread, result = run_pump(sock, in_read, out_write)
        sock.incoming.put(b"output")
        thread.join(5)
    finally:
        signal.signal(signal.SIGPIPE, previous)
    assert result["outcome"].how == "output" and sock.closed.is_set()


@pytest.fixture
def pty_fd():
    """A terminal of our own (its settings are what raw mode changes)."""
    leader, follower = os.openpty()
    yield follower
    os.close(follower)
    os.close(leader)


def test_raw_mode_inside_and_the_terminal_restored_after_an_error(pty_fd):
    before = termios.tcgetattr(pty_fd)
    with pytest.raises(RuntimeError), terminal.raw_terminal(pty_fd) as raw:
        assert raw is True
        lflag = termios.tcgetattr(pty_fd)[3]
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)  # ^C is a byte for the guest
        raise RuntimeError("the connection broke")
    assert termios.tcgetattr(pty_fd) == before


def test_a_pipe_is_left_alone(pipes):
    _, in_read, _, _ = pipes
    with terminal.raw_terminal(in_read) as raw:
        assert raw is False


def test_sigterm_during_a_session_restores_the_terminal_and_the_handlers(pty_fd, pipes):
    _, in_read, out_write, _ = pipes
    before = termios.tcgetattr(pty_fd)
    handlers = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP))
    sock = FakeSocket()
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(terminal.Terminated) as terminated:
        with terminal.signals_raise(), terminal.raw_terminal(pty_fd):
            assert termios.tcgetattr(pty_fd) != before
            terminal.pump(sock, in_read, out_write, interactive=True)  # blocks until the signal
    assert terminated.value.signum == signal.SIGTERM
    assert termios.tcgetattr(pty_fd) == before
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == handlers
    assert sock.closed.is_set()


def test_what_the_terminal_answered_the_guest_never_reaches_the_shell_after():
    """The guest writes to the user's terminal, and some escape sequences make the terminal
    answer into its input (device status, and in some terminals the window title the guest
    set: `ESC ] 2 ; text BEL` then `ESC [ 21 t`). An answer still unread when vmctl console
    leaves would be read by the user's shell as typed. The terminal's settings come back
    with its pending input discarded, as virsh console's do (TCSAFLUSH, vshTTYRestore)."""
    leader, follower = os.openpty()
    try:
        with terminal.raw_terminal(follower):
            # the terminal's answer to the guest's last request, unread when the session ends
            os.write(leader, b"\x1b]l; rm -rf ~\n")
            time.sleep(0.1)
        os.set_blocking(follower, False)
        with pytest.raises(BlockingIOError):
            os.read(follower, 100)  # nothing left for the shell to read
    finally:
        os.close(follower)
        os.close(leader)
