"""The .deb on a fresh Debian 12 (`make test-deb`; minutes): debootstrap a
minbase root from deb.debian.org (its tarball cached in .cache/deb-test/), `apt
install ./vm-appliance_*.deb` in it (apt resolves libvirt, QEMU, fuse3, python3.11
from Debian), run vm-appliance.service's ExecStart as systemd would (a
NOTIFY_SOCKET; no systemd runs here) and see READY=1 and /readyz answer, `vmctl`
with no flags find it, the mount appear; then `apt remove` keeps
/var/lib/vm-appliance and `apt purge` deletes it.

libvirtd: the host's, its /run/libvirt bind-mounted into the root (read-only)
after the install and before the start, not a second libvirtd started in the
chroot: that one would share this machine's network namespace, bridges and
firewall with the host's and the other tests' libvirtd. The root's own libvirt
packages are installed (the package's Depends) but not started (policy-rc.d).

Every mount made under the root is unmounted in a finally, failure or not."""
from __future__ import annotations

import gzip
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.appliance_process import ROOT, free_port, remove_prefixed_domains

pytestmark = [pytest.mark.slow, pytest.mark.deb]

MIRROR = "http://deb.debian.org/debian"
CACHE = ROOT / ".cache" / "deb-test"
TARBALL = CACHE / "bookworm-minbase.tgz"
APT_ARCHIVES = CACHE / "apt-archives"  # the .debs apt fetched, kept between runs
DATA = "var/lib/vm-appliance"
UNIT = "lib/systemd/system/vm-appliance.service"


@pytest.fixture(scope="session", autouse=True)
def _demo_image():
    """No guest boots here: the integration suite's demo-image check (conftest) is not ours."""


def run(args: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                            **kwargs)
    assert result.returncode == 0, (
        f"{shlex.join(args)} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def in_root(root: Path, command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LANG": "C.UTF-8", "HOME": "/root"}
    return run(["chroot", str(root), "/bin/sh", "-ec", command], timeout, env=env)


def the_deb() -> Path:
    debs = sorted(ROOT.glob("vm-appliance_*.deb"), key=lambda p: p.stat().st_mtime)
    if not debs:
        pytest.fail("no vm-appliance_*.deb in the repository's root: run `make deb` (make test-deb does)")
    return debs[-1]


def base_tarball() -> Path:
    """debootstrap's minbase of bookworm as a tarball of .debs, made once."""
    if not TARBALL.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        work = CACHE / f"mk-{os.getpid()}"
        partial = TARBALL.with_suffix(".partial.tgz")
        try:
            run(["debootstrap", "--variant=minbase", f"--make-tarball={partial}", "bookworm",
                 str(work), MIRROR], 900)
            partial.replace(TARBALL)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            partial.unlink(missing_ok=True)
    return TARBALL


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below root, deepest first (from /proc/self/mountinfo)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(f"{root}/"):
            points.append(point)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def unmount_all(root: Path) -> None:
    for point in mounts_under(root):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)
    assert mounts_under(root) == [], "mounts left under the test root"


def bind(source: str | Path, target: Path, read_only: bool = False) -> None:
    target.mkdir(parents=True, exist_ok=True)
    run(["mount", "--bind", str(source), str(target)], 30)
    if read_only:
        run(["mount", "-o", "remount,bind,ro", str(target)], 30)


@pytest.fixture
def debian_root():
    """A fresh bookworm root with /proc, /dev and the apt cache mounted, under
    .cache/deb-test (not /tmp: it holds ~1 GB once QEMU is in)."""
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.fail("needs root and debootstrap: bash packaging/deb/build-deps.sh")
    tarball = base_tarball()
    root = CACHE / f"root-{uuid.uuid4().hex[:8]}"
    try:
        run(["debootstrap", "--variant=minbase", f"--unpack-tarball={tarball}", "bookworm",
             str(root), MIRROR], 1200)
        run(["mount", "-t", "proc", "proc", str(root / "proc")], 30)
        bind("/dev", root / "dev")
        bind("/dev/pts", root / "dev/pts")
        APT_ARCHIVES.mkdir(parents=True, exist_ok=True)
        bind(APT_ARCHIVES, root / "var/cache/apt/archives")
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        # Packages start no daemons here (libvirtd, virtlogd, dnsmasq): policy-rc.d says no.
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        (root / "etc/apt/sources.list").write_text(f"deb {MIRROR} bookworm main\n")
        yield root
    finally:
        unmount_all(root)
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False, timeout=600)


def exec_start(root: Path, unit: str = UNIT) -> list[str]:
    """The ExecStart of an installed unit, as argv, with $VAR expanded as systemd
    does for an unquoted word: the EnvironmentFile's value, else Environment='s,
    split at spaces."""
    text = (root / unit).read_text()
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("Environment="):
            name, _, value = shlex.split(line.removeprefix("Environment="))[0].partition("=")
            values[name] = value
    for line in text.splitlines():
        if line.startswith("EnvironmentFile="):
            path = root / line.removeprefix("EnvironmentFile=").lstrip("-").lstrip("/")
            for entry in path.read_text().splitlines() if path.exists() else []:
                if entry.strip() and not entry.lstrip().startswith("#"):
                    name, _, value = shlex.split(entry)[0].partition("=")
                    values[name] = value
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            argv: list[str] = []
            for word in shlex.split(line.removeprefix("ExecStart=")):
                argv += values[word[1:]].split() if word.startswith("$") else [word]
            return argv
    raise AssertionError(f"no ExecStart in {unit}")


def start_service(root: Path, notify: Path | None, log_path: Path,
                  unit: str = UNIT) -> subprocess.Popen:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    if notify is not None:
        env["NOTIFY_SOCKET"] = "/" + str(notify.relative_to(root))
    with open(log_path, "wb") as log:
        return subprocess.Popen(["chroot", str(root), *exec_start(root, unit)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def check_exporter(root: Path, tmp_path: Path) -> None:
    """vm-appliance-exporter.service's ExecStart, with its options from
    /etc/default/vm-appliance-exporter: /metrics answers with the home's token."""
    port = free_port()
    (root / "etc/default/vm-appliance-exporter").write_text(
        f'VM_APPLIANCE_EXPORTER_ARGS="--listen 127.0.0.1:{port} --any-appliance"\n')
    proc = start_service(root, None, tmp_path / "exporter.log",
                         "lib/systemd/system/vm-appliance-exporter.service")
    try:
        token = (root / DATA / "token").read_text().strip()
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10,
                                      headers={"Authorization": f"Bearer {token}"})
                break
            except requests.ConnectionError:
                assert proc.poll() is None, (tmp_path / "exporter.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the exporter did not listen within 60 s"
                time.sleep(0.5)
        assert answer.status_code == 200, answer.text
        assert "# HELP" in answer.text
        assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 401
    finally:
        stop(proc)


def test_install_serve_remove_purge(debian_root, tmp_path):
    root = debian_root
    deb = the_deb()
    shutil.copy(deb, root / "tmp" / deb.name)
    in_root(root, "apt-get update -qq")
    started = time.monotonic()
    in_root(root, f"cd /tmp && apt-get install -y -qq --no-install-recommends ./{deb.name}")
    print(f"apt install ./{deb.name}: {time.monotonic() - started:.0f} s")

    # What the package put in place.
    assert (root / "usr/bin/vmctl").exists() and (root / "opt/vm-appliance/bin/python3.11").exists()
    assert (root / "etc/vm-appliance/config.toml").read_text() == (
        ROOT / "packaging/deb/config.toml").read_text()
    assert (root / DATA).is_dir() and (root / DATA).stat().st_mode & 0o777 == 0o700
    assert (root / "etc/systemd/system/multi-user.target.wants/vm-appliance.service").is_symlink()
    assert not (root / "etc/systemd/system/multi-user.target.wants/vm-appliance-exporter.service").exists()
    in_root(root, "/opt/vm-appliance/bin/python -c "
                  "'import pyfuse3; assert pyfuse3.FileInfo(noflush=True).noflush'")
    # vmctl's man page and completions, generated from its parser at build time
    man = gzip.decompress((root / "usr/share/man/man1/vmctl.1.gz").read_bytes()).decode()
    assert man.startswith(".TH VMCTL") and "admin" in man and "\\-\\-home" in man
    bash = (root / "usr/share/bash-completion/completions/vmctl").read_text()
    assert "complete" in bash and "serve" in bash
    assert (root / "usr/share/zsh/vendor-completions/_vmctl").read_text().startswith("#compdef vmctl")

    # The admin's settings: a free port and a domain prefix of our own on the shared libvirtd.
    port = free_port()
    prefix = f"deb{uuid.uuid4().hex[:6]}-"
    with open(root / "etc/vm-appliance/config.toml", "a") as config:
        config.write(f'\nlisten = "127.0.0.1:{port}"\ndomain_prefix = "{prefix}"\naccel = "tcg"\n')
    bind("/run/libvirt", root / "run/libvirt", read_only=True)
    notify_path = root / "run/vmapp-notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(300)
    proc = start_service(root, notify_path, tmp_path / "serve.log")
    try:
        try:
            message = notify.recv(4096).decode()
        except TimeoutError:
            raise AssertionError("no READY=1 within 300 s:\n"
                                 + (tmp_path / "serve.log").read_text()[-3000:]) from None
        assert message.startswith(f"READY=1\nSTATUS=serving on 127.0.0.1:{port}"), message
        answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert answer.status_code == 200, answer.text
        # vmctl on the PATH finds the local appliance with no flags.
        listed = in_root(root, "vmctl --json list", timeout=60)
        assert listed.stdout.strip() == "[]", listed.stdout
        # The mount, through the root's fuse3.
        mount = root / DATA / "mnt"
        deadline = time.monotonic() + 60
        while not os.path.ismount(mount) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert os.path.ismount(mount)
        assert "vms" in os.listdir(mount)
        assert stop(proc) == 0
        assert notify.recv(4096) == b"STOPPING=1"
        assert not os.path.ismount(mount)
        check_exporter(root, tmp_path)
    finally:
        stop(proc)
        notify.close()
        subprocess.run(["umount", "-l", str(root / "run/libvirt")], capture_output=True, check=False)
        remove_prefixed_domains(prefix)
    for name in ("appliance.db", "token", "config.json"):
        assert (root / DATA / name).exists(), name

    # An upgrade (here the same version again) keeps the data and the admin's edits.
    edited = (root / "etc/vm-appliance/config.toml").read_text()
    in_root(root, f"cd /tmp && apt-get install -y -qq --reinstall ./{deb.name}")
    assert (root / "etc/vm-appliance/config.toml").read_text() == edited
    assert (root / DATA / "appliance.db").exists() and (root / DATA / "token").exists()

    in_root(root, "apt-get remove -y -qq vm-appliance")
    assert (root / DATA / "appliance.db").exists() and (root / DATA / "token").exists()
    assert (root / "etc/vm-appliance/config.toml").exists()  # a conffile: kept until purge
    assert not (root / "usr/bin/vmctl").exists()
    assert not (root / "opt/vm-appliance").exists()

    in_root(root, "apt-get purge -y -qq vm-appliance")
    assert not (root / DATA).exists()
    assert not (root / "etc/vm-appliance").exists()
