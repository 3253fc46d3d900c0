"""hosts/, groups/ and a VM's host file in the mount (issue 5), by real shell commands,
checked by exit status, stderr and the service's view (libvirt's test driver)."""
from __future__ import annotations

import errno
import json
import os
import time
import stat

from appliance.files import HOST_FILES
from tests.fs.conftest import Mount

EINVAL = os.strerror(errno.EINVAL)
EBUSY = os.strerror(errno.EBUSY)
EACCES = os.strerror(errno.EACCES)
ENOENT = os.strerror(errno.ENOENT)
EEXIST = os.strerror(errno.EEXIST)
SOCKET_URI = "qemu+unix:///system?socket=/run/libvirt/nonexistent-h2/libvirt-sock"


def add_host(mount: Mount, name: str = "h2", uri: str = SOCKET_URI) -> None:
    result = mount.sh(f"mkdir hosts/{name} && echo '{uri}' > hosts/{name}/uri")
    assert result.returncode == 0, result.stderr


# -- hosts/ ----------------------------------------------------------------------------------
def test_a_host_directory_is_the_services_host_files(mount):
    host = mount.mnt / "hosts" / "local"
    assert os.listdir(mount.mnt / "hosts") == ["local"]
    assert os.listdir(host) == list(HOST_FILES)
    for file, writable in ((f.name, f.writable) for f in HOST_FILES.entries):
        info = os.stat(host / file)
        assert stat.S_IMODE(info.st_mode) == (0o600 if writable else 0o400), file  # nobody else mapped
        assert (host / file).read_text() == HOST_FILES.read(mount.service, "local", file), file
        assert info.st_size == len((host / file).read_bytes()), file
    assert (host / "state").read_text() == "enabled\n"
    assert (host / "uri").read_text() == "test:///default\n"


def test_capacity_allocated_vms_and_status_json(mount):
    mount.mkvm("web1")
    result = mount.sh("cat hosts/local/capacity hosts/local/allocated hosts/local/vms")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # 16 CPUs x 16.0, 3072 MiB x 1.5 (the test driver's host, default ratios); the disk is where
    # HOME is; no dedicated CPUs and no hugepages on it (issue 14's capacity keys)
    assert lines[:4] == ["cpus 256", "dedicated_cpus 0", "hugepages_mib 0", "memory_mib 4608"]
    assert lines[4] == f"disk_gib {mount.service.get_host('local')['capacity']['disk_gib']}"
    # web1 is stopped: it claims its disk, not its vCPU and memory (those are claimed at start)
    assert lines[5:9] == ["cpus 0", "dedicated_cpus 0", "hugepages_mib 0", "memory_mib 0"]
    assert lines[9].startswith("disk_gib ") and lines[10] == "vms 1"
    assert lines[11:] == ["web1"]
    status = json.loads(mount.sh("cat hosts/local/status.json").stdout)
    assert status["name"] == "local" and status["up"] is True
    assert status["allocated"]["vms"] == 1 and status["capacity"]["cpus"] == 256


def test_echo_a_state_to_a_host(mount):
    mount.mkvm("web1")
    for state in ("disabled", "maintenance", "enabled"):
        result = mount.sh(f"echo {state} > hosts/local/state && cat hosts/local/state")
        assert result.returncode == 0, (state, result.stderr)
        assert result.stdout == f"{state}\n"
        assert mount.service.get_host("local")["state"] == state
    # Maintenance drains: web1 had nowhere to go (the only other host is none), so it stayed, said so.
    assert "drain-blocked" in [e["kind"] for e in mount.service.list_events("web1")]
    assert mount.service.get_vm("web1")["host"] == "local"


def test_a_bad_host_state_is_einval_and_changes_nothing(mount):
    result = mount.sh("echo flying > hosts/local/state")
    assert result.returncode == 1 and f"write error: {EINVAL}" in result.stderr, result.stderr
    assert mount.service.get_host("local")["state"] == "enabled"


def test_read_only_host_files_refuse_writes(mount):
    for file in (f.name for f in HOST_FILES.entries if not f.writable):
        result = mount.sh(f"echo x > hosts/local/{file}")
        assert result.returncode == 1 and EACCES in result.stderr, (file, result.stderr)
    assert mount.service.get_host("local")["uri"] == "test:///default"


def test_rmdir_of_a_host_with_vms_is_ebusy_unknown_enoent(mount):
    mount.mkvm("web1")
    result = mount.sh("rmdir hosts/local")
    assert result.returncode == 1 and EBUSY in result.stderr, result.stderr
    assert [h["name"] for h in mount.service.list_hosts()] == ["local"]
    result = mount.sh("rmdir hosts/nope")
    assert result.returncode == 1 and ENOENT in result.stderr, result.stderr


def test_mkdir_then_uri_adds_a_host_and_rmdir_removes_it(mount):
    result = mount.sh("mkdir hosts/h2 && ls hosts && ls -l hosts/h2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == ["h2", "local"]
    assert " uri" in result.stdout and result.stdout.count("-rw-------") == 1
    assert [h["name"] for h in mount.service.list_hosts()] == ["local"]  # nothing stored yet
    result = mount.sh(f"echo '{SOCKET_URI}' > hosts/h2/uri")
    assert result.returncode == 0, result.stderr
    host = mount.service.get_host("h2")
    assert host["uri"] == SOCKET_URI and host["state"] == "enabled"
    assert os.listdir(mount.mnt / "hosts" / "h2") == list(HOST_FILES)
    assert (mount.mnt / "hosts" / "h2" / "uri").read_text() == SOCKET_URI + "\n"
    assert (mount.mnt / "hosts" / "h2" / "state").read_text() == "down\n"  # no libvirtd answers there
    result = mount.sh("echo qemu:///system > hosts/h2/uri")  # now the service's read-only uri
    assert result.returncode == 1 and EACCES in result.stderr, result.stderr
    result = mount.sh("rmdir hosts/h2")
    assert result.returncode == 0, result.stderr
    assert [h["name"] for h in mount.service.list_hosts()] == ["local"]
    assert os.listdir(mount.mnt / "hosts") == ["local"]


def test_a_staged_host_refuses_bad_input_and_changes_nothing(mount):
    result = mount.sh("mkdir hosts/Bad_Name")
    assert result.returncode == 1 and EINVAL in result.stderr, result.stderr
    result = mount.sh("mkdir hosts/local")
    assert result.returncode == 1 and EEXIST in result.stderr, result.stderr
    assert mount.sh("mkdir hosts/h3").returncode == 0
    result = mount.sh("echo 'not a uri' > hosts/h3/uri")
    assert result.returncode == 1 and f"write error: {EINVAL}" in result.stderr, result.stderr
    result = mount.sh("echo test:///default > hosts/h3/uri")  # local's URI: taken
    assert result.returncode == 1 and f"write error: {EBUSY}" in result.stderr, result.stderr
    assert [h["name"] for h in mount.service.list_hosts()] == ["local"]
    assert sorted(os.listdir(mount.mnt / "hosts")) == ["h3", "local"]  # still staged, still empty
    assert mount.sh("rmdir hosts/h3").returncode == 0
    assert os.listdir(mount.mnt / "hosts") == ["local"]


def test_a_staged_host_is_gone_after_unmount(tmp_path):
    m = Mount(tmp_path)
    try:
        m.start()
        assert m.sh("mkdir hosts/h4").returncode == 0
        m.stop()
        m.start()
        assert os.listdir(m.mnt / "hosts") == ["local"]
        assert [h["name"] for h in m.service.list_hosts()] == ["local"]
    finally:
        m.stop()


# -- a VM's host file ------------------------------------------------------------------------------
def test_vm_host_writes_unknown_enoent_down_ebusy_same_nothing(mount):
    mount.mkvm("web1", "running")
    result = mount.sh("echo otherhost > vms/web1/host")
    assert result.returncode == 1 and f"write error: {ENOENT}" in result.stderr, result.stderr
    add_host(mount, "h2")  # added, but no libvirtd answers there: down
    result = mount.sh("echo h2 > vms/web1/host")
    assert result.returncode == 1 and f"write error: {EBUSY}" in result.stderr, result.stderr
    result = mount.sh("echo local > vms/web1/host && cat vms/web1/host")  # where it is: nothing to do
    assert result.returncode == 0, result.stderr
    assert result.stdout == "local\n"
    vm = mount.service.get_vm("web1")
    assert vm["host"] == "local" and vm["state"] == "running"


# -- groups/ ---------------------------------------------------------------------------------------
def test_groups_by_echo_cat_and_rm(mount):
    result = mount.sh("""echo '{"policy": "anti-affinity"}' > groups/web.json && ls groups""")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "web.json\n"
    group = mount.service.get_group("web")
    assert group["policy"] == "anti-affinity" and group["members"] == []
    assert json.loads((mount.mnt / "groups" / "web.json").read_text()) == group
    assert stat.S_IMODE(os.stat(mount.mnt / "groups" / "web.json").st_mode) == 0o400
    result = mount.sh("""echo '{"policy": "anti-affinity"}' > groups/web.json""")  # it exists: read-only
    assert result.returncode == 1 and EACCES in result.stderr, result.stderr

    mount.service.create_vm({"name": "web1", "state": "stopped", "group": "web"})
    assert json.loads((mount.mnt / "groups" / "web.json").read_text())["members"] == \
        [{"name": "web1", "host": "local"}]
    result = mount.sh("rm groups/web.json")
    assert result.returncode == 1 and EBUSY in result.stderr, result.stderr
    assert mount.sh("rmdir vms/web1 && rm groups/web.json").returncode == 0
    assert mount.service.list_groups() == [] and os.listdir(mount.mnt / "groups") == []
    result = mount.sh("rm groups/nope.json")
    assert result.returncode == 1 and ENOENT in result.stderr, result.stderr


def test_a_bad_group_is_einval_and_creates_nothing(mount):
    for command in ("""echo '{"policy": "together"}' > groups/g.json""",
                    """echo '["anti-affinity"]' > groups/g.json""",
                    """echo '{"policy": "affinity", "name": "other"}' > groups/g.json""",
                    """echo '{"policy": "affinity"}' > groups/Bad_Name.json""",
                    """echo '{"policy": "affinity"}' > groups/g.txt"""):
        result = mount.sh(command)
        assert result.returncode == 1, command
        assert EINVAL in result.stderr or EACCES in result.stderr, (command, result.stderr)
    assert mount.service.list_groups() == []
    assert os.listdir(mount.mnt / "groups") == []


def test_a_host_uri_that_would_run_a_command_is_refused(mount, tmp_path):
    """Issue 9, finding 2, through the mount: `qemu+ext://...?command=` ran the
    command as root at each connection attempt."""
    marker = tmp_path / "ran-as-root"
    script = tmp_path / "script"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    assert mount.sh("mkdir hosts/h5").returncode == 0
    result = mount.sh(f"echo 'qemu+ext:///system?command={script}' > hosts/h5/uri")
    assert result.returncode == 1 and f"write error: {EINVAL}" in result.stderr, result.stderr
    result = mount.sh("echo 'qemu+ssh://%2Ftmp%2Fx@localhost/system' > hosts/h5/uri")
    assert result.returncode == 1 and f"write error: {EINVAL}" in result.stderr, result.stderr
    time.sleep(2.5)  # the controller's heartbeat would have connected by now
    assert not marker.exists()
    assert [h["name"] for h in mount.service.list_hosts()] == ["local"]
