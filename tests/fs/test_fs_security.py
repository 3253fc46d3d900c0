"""Issue 9, the mount's part: size caps (finding 5), host and server-group
administration by the mount's owner alone (finding 8), and names with control
characters or spaces refused up front (finding 9). Real mounts, real shell
commands, checked by errno and by the store's own view."""
from __future__ import annotations

import errno
import grp
import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from tests.fs.conftest import Mount, as_nobody

EINVAL = os.strerror(errno.EINVAL)
EACCES = os.strerror(errno.EACCES)
EFBIG = os.strerror(errno.EFBIG)  # "File too large"
# The caps the mount promises: a value file (state, cpus, memory, host, uri) holds at most 4 KiB,
# a JSON file (spec.json, groups/NAME.json) at most 1 MiB; EFBIG beyond.
VALUE_CAP = 4 << 10
JSON_CAP = 1 << 20
SOCKET_URI = "qemu+unix:///system?socket=/run/libvirt/nonexistent-h2/libvirt-sock"  # under host_socket_dirs


def rss_kib(pid: int) -> int:
    """The resident set of a process, from /proc (what grew to 7.6 GB in the finding)."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1])


def vm_record(mount: Mount, name: str) -> tuple:
    vm = mount.service.get_vm(name)
    return vm["state"], vm["spec"], vm["updated"]


def pwrite_errno(fd: int, data: bytes, offset: int) -> int | None:
    try:
        os.pwrite(fd, data, offset)
    except OSError as err:
        return err.errno
    return None


# -- finding 5: one write cannot make the mount grow ---------------------------------------------
def test_a_write_far_past_a_files_cap_is_efbig_and_costs_no_memory(mount):
    mount.mkvm("web1")
    before = vm_record(mount, "web1")
    pid = mount.proc.pid
    rss, log_size = rss_kib(pid), mount.log.stat().st_size
    fd = os.open(mount.vm("web1") / "state", os.O_WRONLY)
    try:
        # 64 MiB first: before the fix it padded the buffer with 64 MiB of NULs (and 256 MiB reached 7.6 GB)
        code = pwrite_errno(fd, b"x", 64 << 20)
        grown = rss_kib(pid) - rss
        assert (code, grown < 16 * 1024) == (errno.EFBIG, True), f"errno {code}, RSS grew by {grown} KiB"
        assert pwrite_errno(fd, b"x", 256 << 20) == errno.EFBIG
        assert pwrite_errno(fd, b"x", VALUE_CAP) == errno.EFBIG  # the first byte past the cap
        assert pwrite_errno(fd, b"running\n", VALUE_CAP - 4) == errno.EFBIG  # one that would cross the cap
        assert pwrite_errno(fd, b"x" * (VALUE_CAP + 1), 0) == errno.EFBIG  # one longer than the cap
    finally:
        try:
            os.close(fd)
        except OSError:
            pass  # before the fix: the padded value is refused at close
    assert rss_kib(pid) - rss < 16 * 1024
    assert vm_record(mount, "web1") == before
    assert mount.log.stat().st_size - log_size < 16 * 1024  # no value echoed into the log
    # the file still takes a value
    result = mount.sh("echo running > vms/web1/state && cat vms/web1/state")
    assert (result.returncode, result.stdout) == (0, "running\n"), result.stderr


def test_spec_json_and_truncate_have_caps_too(mount):
    mount.mkvm("web1")
    before = vm_record(mount, "web1")
    spec_cap = JSON_CAP
    fd = os.open(mount.vm("web1") / "spec.json", os.O_WRONLY)
    try:
        assert pwrite_errno(fd, b"{}", spec_cap) == errno.EFBIG
    finally:
        os.close(fd)
    for command in ("truncate -s 1G vms/web1/state", f"truncate -s {spec_cap + 1} vms/web1/spec.json"):
        result = mount.sh(command)
        assert result.returncode != 0 and EFBIG in result.stderr, (command, result.stderr)
    # a spec.json just over the cap, written as `cat` or `cp` would: refused, nothing applied
    big = b'{"cpus": 2, "labels": {"x": "' + b"y" * spec_cap + b'"}}\n'
    (mount.mnt.parent / "big.json").write_bytes(big)
    result = mount.sh(f"cat {shlex.quote(str(mount.mnt.parent / 'big.json'))} > vms/web1/spec.json")
    assert result.returncode != 0 and EFBIG in result.stderr, result.stderr
    assert vm_record(mount, "web1") == before
    assert mount.sh("truncate -s 0 vms/web1/state").returncode == 0  # O_TRUNC still works


# -- finding 8: a mount group's members are not the appliance's administrators -------------------
def as_member_with_dac_override(command: str, cwd: Path, gid: int) -> subprocess.CompletedProcess:
    """uid 65534 in the mount's group, holding CAP_DAC_OVERRIDE: the kernel's mode checks let it
    write anything, so only the file system's own check of the caller stops it."""
    caps = ["--inh-caps=+dac_override", "--ambient-caps=+dac_override"]
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", f"--groups={gid}", *caps,
                           "bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def admin_view(m: Mount) -> tuple:
    hosts = sorted((h["name"], h["state"], h["uri"]) for h in m.service.list_hosts())
    groups = sorted(g["name"] for g in m.service.list_groups())
    return hosts, groups, sorted(os.listdir(m.mnt / "hosts")), sorted(os.listdir(m.mnt / "groups"))


# Each is refused for a group member (an operator: hosts are the admin's, as through REST);
# `hosts/h2` is staged by the owner first (its uri is the write that would add a host with any
# transport). Server groups are an operator's to make and remove (VM_CHANGE, as POST /v1/groups).
MEMBER_REFUSED = (
    "echo disabled > hosts/local/state",
    "echo maintenance > hosts/local/state",
    f"echo '{SOCKET_URI}' > hosts/h2/uri",
    "mkdir hosts/h3",
    "rmdir hosts/local",
    "rmdir hosts/h2",
    "truncate -s 0 hosts/local/state",
    "touch images/mine.img",  # importing an image is an admin's (fs/image_imports.py)
    "rm images/demo.json",  # and so is deleting one
)


@pytest.mark.parametrize("bypass_modes", [False, True], ids=["member", "member-with-dac-override"])
def test_group_members_cannot_administer_hosts_or_server_groups(tmp_path, open_dir, bypass_modes):
    m = Mount(tmp_path, mnt=open_dir / "mnt", group="operator")
    gid = grp.getgrnam("operator").gr_gid
    try:
        m.start()
        m.mkvm("web1")
        result = m.sh("""mkdir hosts/h2 && echo '{"policy": "anti-affinity"}' > groups/web.json""")
        assert result.returncode == 0, result.stderr
        before = admin_view(m)
        for command in MEMBER_REFUSED:
            if bypass_modes:
                result = as_member_with_dac_override(command, m.mnt, gid)
            else:
                result = as_nobody(command, m.mnt, str(gid))
            assert result.returncode != 0 and EACCES in result.stderr, (command, result.stderr)
            assert admin_view(m) == before, command
        # the modes say what anyone may do (the policy, who): the kernel lets the member in,
        # the file system refuses (the dac-override case shows the modes are not what stops it)
        modes = {p: stat.S_IMODE(os.stat(m.mnt / p).st_mode)
                 for p in ("hosts", "hosts/local", "hosts/local/state", "hosts/h2/uri", "groups", "vms")}
        assert modes == {"hosts": 0o777, "hosts/local": 0o555, "hosts/local/state": 0o666,
                         "hosts/h2/uri": 0o666, "groups": 0o777, "vms": 0o777}
        kinds = [e["kind"] for e in m.service.list_events()]
        assert kinds.count("refused") == len(MEMBER_REFUSED)
        # reading stays open to the group, and so does everything a VM user (an operator) does
        result = as_nobody("cat hosts/local/state groups/web.json >/dev/null && echo 2 > vms/web1/cpus"
                           " && mkdir vms/web2 && mv vms/web2 vms/web3 && rmdir vms/web3"
                           """ && echo '{"policy": "affinity"}' > groups/g.json && rm groups/g.json""",
                           m.mnt, str(gid))
        assert result.returncode == 0, result.stderr
        assert m.service.get_vm("web1")["spec"]["cpus"] == 2
        assert admin_view(m) == before  # g.json made and removed
        # and the owner still administers
        result = m.sh(f"echo '{SOCKET_URI}' > hosts/h2/uri && echo disabled > hosts/local/state"
                      " && rm groups/web.json")
        assert result.returncode == 0, result.stderr
        assert m.service.get_host("h2")["uri"] == SOCKET_URI and m.service.get_host("local")["state"] == "disabled"
    finally:
        m.stop()


# -- finding 9: names with a newline, a carriage return or a trailing space ----------------------
# NUL is not among them: a path is a C string, so no shell or system call can pass one to the
# mount (bash drops it from $'a\0', Python raises ValueError before the call).
BAD_NAMES = ("a\n", "a\r", "a ", "a\nb", "\nweb1")


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_mkdir_and_mv_refuse_names_with_control_characters_or_spaces(mount, name):
    mount.mkvm("web1")
    quoted = shlex.quote(name)
    # mv reports EINVAL from rename(2) as "cannot move ... to a subdirectory of itself": the errno from Python
    result = mount.sh(f"mv vms/web1 vms/{quoted}")
    assert result.returncode != 0, result.stderr
    with pytest.raises(OSError) as caught:
        os.rename(mount.vm("web1"), mount.mnt / "vms" / name)
    assert caught.value.errno == errno.EINVAL
    assert [vm["name"] for vm in mount.service.list_vms()] == ["web1"]  # not renamed
    commands = (f"mkdir vms/{quoted}", f"mkdir hosts/{quoted}",
                f"""echo '{{"policy": "affinity"}}' > groups/{shlex.quote(name + '.json')}""")
    for command in commands:
        result = mount.sh(command)
        assert result.returncode != 0 and EINVAL in result.stderr, (command, result.stderr)
    assert [vm["name"] for vm in mount.service.list_vms()] == ["web1"]
    assert os.listdir(mount.mnt / "vms") == ["web1"] and mount.service.get_vm("web1")["state"] == "stopped"
    assert os.listdir(mount.mnt / "hosts") == ["local"] and os.listdir(mount.mnt / "groups") == []
    assert mount.service.list_groups() == []
