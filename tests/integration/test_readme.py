"""The README's shell sessions, run against a real appliance (issue 16: a README
that cannot drift). tests/readme_sessions.py says how a block is read, what
its placeholders mean and how a block is marked to be skipped (with its reason,
shown by `pytest -ra`).

The sessions run as the README tells a reader to, in a repository of their own
(a temporary directory with `.venv`, `.cache` and `packaging` linked to the
real ones): the appliance that `make run` would start is this module's
fixture, serving the home `./.appliance` (its API on a free port, written in
its config.json, where vmctl finds it), its mount at `./.appliance/mnt`.
`packaging/local-hosts` keeps its hosts in a private LOCAL_HOSTS_DIR (a folder
of the default one, which config host_socket_dirs allows), so the README's `h2`
and `h3` meet no one else's; that folder is shown as the default in the output
compared, and its hosts are taken down at the end.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.appliance_process import DEMO_IMAGE, ROOT, Appliance
from tests.readme_sessions import Block, Shell, matches, parse

BLOCKS = parse((ROOT / "README.md").read_text())
COMMAND_TIMEOUT = 300  # a create or a stop under TCG on a loaded machine
LOCAL_HOSTS_DIR = "/var/lib/vm-appliance/local-hosts"  # packaging/local-hosts' default


@pytest.fixture(scope="module")
def readme_repo():
    repo = Path(tempfile.mkdtemp(prefix="readme-"))
    (repo / ".venv").symlink_to(sys.prefix)  # the venv running the tests, with its vmctl
    (repo / "packaging").symlink_to(ROOT / "packaging")
    (repo / ".cache" / "images").mkdir(parents=True)
    (repo / ".cache" / "images" / "demo.qcow2").symlink_to(DEMO_IMAGE)
    # under the default LOCAL_HOSTS_DIR, which config host_socket_dirs allows; short: a
    # local host's socket path must fit a sockaddr_un
    base = Path(LOCAL_HOSTS_DIR)
    base.mkdir(parents=True, exist_ok=True)
    hosts_dir = Path(tempfile.mkdtemp(prefix="readme-", dir=base))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMAPP", "VMCTL", "PYTEST"))}
    venv_bin = repo / ".venv" / "bin"
    env.update(PATH=f"{venv_bin}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
               VMAPP_HOME=str(repo / ".appliance"), PYTHONPATH=str(ROOT),
               LOCAL_HOSTS_DIR=str(hosts_dir), TERM="dumb", LC_ALL="C.UTF-8",
               VMCTL_CONFIG=str(repo / "vmctl-config.toml"), HOME=str(repo))
    app = Appliance(repo / ".appliance")
    try:
        app.start()
        yield repo, env, app
    finally:
        try:
            app.cleanup()
        finally:
            # the hosts the sessions started (not the script's .locks); kept when `down` fails,
            # so that nothing runs on with its folder gone
            names = [p.name for p in hosts_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
            down = subprocess.run([str(ROOT / "packaging" / "local-hosts"), "down", *names], env=env,
                                  capture_output=True, text=True, timeout=300) if names else None
            if down is not None and down.returncode != 0:
                pytest.fail(f"local-hosts down {' '.join(names)} in {hosts_dir}: {down.stderr}")
            shutil.rmtree(hosts_dir, ignore_errors=True)
            shutil.rmtree(repo, ignore_errors=True)


@pytest.fixture(scope="module")
def shells():
    opened: list[Shell] = []
    yield opened
    for shell in opened:
        shell.close()


def test_every_console_block_runs_or_says_why():
    """A block is run by test_session below unless marked skip with a reason."""
    assert BLOCKS, "no ```console blocks found in README.md"
    for block in BLOCKS:
        assert block.skip is None or block.skip.strip(), block.line


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_session(block: Block, readme_repo, shells):
    if block.skip is not None:
        pytest.skip(f"README.md:{block.line} ({block.section}): {block.skip}")
    repo, env, _app = readme_repo
    if block.continues:
        assert shells and shells[-1].proc.poll() is None, f"README.md:{block.line} continues a shell that is gone"
        shell = shells[-1]
    else:
        shell = Shell(repo, env)
        shells.append(shell)
    differences = []  # all of the block's, each command run whatever the one before printed
    for cmd in block.commands:
        try:
            out, status = shell.run(cmd.command, COMMAND_TIMEOUT)
            out = out.replace(env["LOCAL_HOSTS_DIR"], LOCAL_HOSTS_DIR)  # the paths a reader's shows
        except (TimeoutError, RuntimeError) as e:  # the shell is no use after: later blocks start anew
            shell.close()
            differences.append(f"README.md:{cmd.line}: $ {cmd.command}\n{str(e)[:3000]}")
            break
        print(f"README.md:{cmd.line}: $ {cmd.command}\n{out}[exit {status}]", flush=True)  # shown on failure
        if not matches(cmd.expected, out):
            differences.append(f"README.md:{cmd.line}: $ {cmd.command}\n--- the README shows:\n"
                               + "\n".join(cmd.expected) + f"\n--- it printed (exit status {status}):\n{out}")
    assert not differences, "\n\n".join(differences)
