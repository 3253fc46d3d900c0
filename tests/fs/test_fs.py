"""The mount, driven by real shell commands, checked by exit status, stderr and
the service's view. The controller runs on libvirt's test driver, so each test
takes well under a second; tests/fs/test_fs_integration.py does it on real VMs."""
from __future__ import annotations

import errno
import grp
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import falcon.testing
import pyfuse3
import pytest
import trio

from appliance import errors
from appliance.api.app import create_app
from appliance.files import VM_FILES
from fs import operations
from fs.mount import is_mounted
from tests.fs.conftest import ROOT, Mount, as_nobody, stop_process, unmount, wait_mounted

EINVAL = os.strerror(errno.EINVAL)  # "Invalid argument"
EBUSY = os.strerror(errno.EBUSY)  # "Device or resource busy"
EACCES = os.strerror(errno.EACCES)  # "Permission denied"
ENOENT = os.strerror(errno.ENOENT)


def events_of(mount: Mount, name: str) -> list[str]:
    """The kinds of what happened to the VM (not the audit trail's records of requests)."""
    return [e["kind"] for e in mount.service.list_events(name) if e["result"] is None]


# -- the tree -------------------------------------------------------------------------------
def test_a_network_is_made_read_and_removed_with_shell_commands(mount):
    """networks/NAME.json (issue 15): written with echo, listed, read with cat, refused with
    EINVAL for a bad body (nothing made), removed with rm."""
    networks = mount.mnt / "networks"
    body = '{"kind": "isolated", "subnet": "10.77.0.0/24"}'
    subprocess.run(["bash", "-c", f"echo '{body}' > {networks}/lab.json"], check=True)
    assert os.listdir(networks) == ["lab.json"]
    shown = json.loads(subprocess.run(["cat", str(networks / "lab.json")], capture_output=True,
                                      text=True, check=True).stdout)
    assert (shown["kind"], shown["subnet"], shown["dhcp"]) == (
        "isolated", "10.77.0.0/24", {"start": "10.77.0.128", "end": "10.77.0.254"})
    bad = subprocess.run(["bash", "-c", f"echo '{{\"kind\": \"nat\", \"subnet\": \"8.8.8.0/24\"}}' "
                          f"> {networks}/pub.json"], capture_output=True, text=True)
    assert bad.returncode != 0 and "Invalid argument" in bad.stderr
    assert os.listdir(networks) == ["lab.json"]
    subprocess.run(["rm", str(networks / "lab.json")], check=True)
    assert os.listdir(networks) == []


def test_top_level_tree(mount):
    assert sorted(os.listdir(mount.mnt)) == ["backup-targets", "events", "groups", "hosts", "images",
                                             "networks", "pools", "projects", "templates", "vms"]
    assert os.listdir(mount.mnt / "images") == ["demo.json"]
    image = json.loads((mount.mnt / "images" / "demo.json").read_text())
    assert image == mount.service.get_image("demo")
    assert json.loads((mount.mnt / "templates" / "default.json").read_text()) == \
        mount.service.get_template("default")["spec"]
    assert (mount.mnt / "hosts" / "local" / "state").read_text() == "enabled\n"
    assert (mount.mnt / "hosts" / "local" / "uri").read_text() == "test:///default\n"
    assert "host-up" in (mount.mnt / "events").read_text()


def test_vm_directory_has_the_files_of_rest(mount):
    vm = mount.mkvm("web1")
    assert os.listdir(vm) == [*VM_FILES, "snapshots", "backups", "disks", "cdroms"]  # test_fs_backups.py, test_fs_disks.py
    for file in VM_FILES:
        if file not in ("console", "screen.png"):  # a log; a screenshot (test_fs_consoles.py)
            assert (vm / file).read_text() == VM_FILES.read(mount.service, "web1", file), file


def test_ls_l_modes_owner_sizes_times(mount):
    vm = mount.mkvm("web1")
    row = mount.service.get_vm("web1")
    result = mount.sh("ls -l vms/web1")
    assert result.returncode == 0, result.stderr
    for file, writable in ((f.name, f.writable) for f in VM_FILES.entries):
        info = os.stat(vm / file)
        assert stat.S_ISREG(info.st_mode)
        # Modes say what anyone may do (the map and the policy say who); with nobody in the
        # mount's map, nobody but its owner may (test_fs_identity.py has the others).
        assert stat.S_IMODE(info.st_mode) == (0o600 if writable else 0o400), file
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())
        if file not in ("console", "screen.png"):  # a log; a screenshot (test_fs_consoles.py)
            assert info.st_size == len((vm / file).read_bytes()), file
            assert abs(info.st_mtime - mount.service.get_vm("web1")["updated"]) < 1.5, file
        assert abs(info.st_atime - row["created"]) < 0.01  # FUSE has no birth time: atime is creation
    # A directory names can be made in (vms/: mkdir, mv, rmdir; a VM's: editors' temporary files,
    # fs/scratch.py) is writable; the others are not.
    for directory, mode in ((mount.mnt, 0o500), (mount.mnt / "vms", 0o700), (vm, 0o700)):
        info = os.stat(directory)
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == mode, directory
    assert stat.S_IMODE(os.stat(mount.mnt / "images" / "demo.json").st_mode) == 0o400


def test_inodes_are_stable_and_follow_a_rename(mount):
    mount.mkvm("a")
    before = os.stat(mount.vm("a") / "state").st_ino
    assert os.stat(mount.vm("a") / "state").st_ino == before
    assert mount.sh("mv vms/a vms/b").returncode == 0
    assert os.stat(mount.vm("b") / "state").st_ino == before
    assert not mount.vm("a").exists()


def test_missing_things_are_enoent(mount):
    result = mount.sh("cat vms/nope/state; cat vms/nope; ls images/nope.json")
    assert result.stderr.count(ENOENT) == 3, result.stderr
    mount.mkvm("web1")
    result = mount.sh("cat vms/web1/nofile")
    assert result.returncode == 1 and ENOENT in result.stderr


# -- mkdir, rmdir, mv -------------------------------------------------------------------------
def test_mkdir_creates_a_stopped_vm_from_the_default_template(mount):
    result = mount.sh("mkdir vms/web1 && cat vms/web1/state")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "stopped\n"
    vm = mount.service.get_vm("web1")
    assert vm["state"] == "stopped" and vm["desired_state"] == "stopped"
    assert vm["spec"]["image"] == "demo" and vm["spec"]["memory"] == 128
    assert VM_FILES.read(mount.service, "web1", "domain.xml")  # the create operation ran


def test_mkdir_bad_name_is_einval_and_creates_nothing(mount):
    result = mount.sh("mkdir vms/Bad_Name")
    assert result.returncode == 1 and EINVAL in result.stderr, result.stderr
    assert mount.service.list_vms() == []


def test_mkdir_existing_is_eexist_and_outside_vms_eacces(mount):
    mount.mkvm("web1")
    result = mount.sh("mkdir vms/web1")
    assert result.returncode == 1 and "File exists" in result.stderr
    result = mount.sh("mkdir images/x; mkdir x; mkdir vms/web1/x")
    assert result.stderr.count(EACCES) == 3, result.stderr


def test_rmdir_deletes_a_stopped_vm(mount):
    mount.mkvm("web1")
    result = mount.sh("rmdir vms/web1")
    assert result.returncode == 0, result.stderr
    assert mount.service.list_vms() == []
    assert not mount.vm("web1").exists()
    assert mount.sh("mkdir vms/web1").returncode == 0  # the name is free again


def test_rmdir_and_mv_of_a_running_vm_are_ebusy_and_change_nothing(mount):
    mount.mkvm("web1", "running")
    result = mount.sh("rmdir vms/web1")
    assert result.returncode == 1 and EBUSY in result.stderr, result.stderr
    result = mount.sh("mv vms/web1 vms/web2")
    assert result.returncode == 1 and EBUSY in result.stderr, result.stderr
    vm = mount.service.get_vm("web1")
    assert vm["state"] == "running" and vm["desired_state"] == "running"
    assert [v["name"] for v in mount.service.list_vms()] == ["web1"]


def test_mv_renames_a_stopped_vm(mount):
    mount.mkvm("web1")
    result = mount.sh("mv vms/web1 vms/api && cat vms/api/state")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "stopped\n"
    assert [v["name"] for v in mount.service.list_vms()] == ["api"]
    assert sorted(os.listdir(mount.mnt / "vms")) == ["api"]


def test_mv_onto_another_vm_is_ebusy_and_bad_names_einval(mount):
    mount.mkvm("a")
    mount.mkvm("b")
    result = mount.sh("mv -T vms/a vms/b")
    assert result.returncode == 1 and EBUSY in result.stderr, result.stderr
    with pytest.raises(OSError) as caught:  # mv words EINVAL as "a subdirectory of itself"
        os.rename(mount.vm("a"), mount.vm("Not_Valid"))
    assert caught.value.errno == errno.EINVAL
    result = mount.sh("mv vms/a/state vms/a/other")
    assert result.returncode == 1 and EACCES in result.stderr, result.stderr
    assert [v["name"] for v in mount.service.list_vms()] == ["a", "b"]


# -- writes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    "echo running > vms/web1/state",
    "echo -n running > vms/web1/state",
    "printf 'running' > vms/web1/state",
    "printf 'running  \\n\\n' > vms/web1/state",
    "echo running | tee vms/web1/state >/dev/null",
    "echo start > vms/web1/state",
])
def test_state_write_forms_return_when_the_vm_got_there(mount, command):
    mount.mkvm("web1")
    result = mount.sh(command)
    assert result.returncode == 0, result.stderr
    assert mount.service.get_vm("web1")["state"] == "running"
    assert (mount.vm("web1") / "state").read_text() == "running\n"


def test_state_verbs_pause_resume_reboot_force_stop(mount):
    mount.mkvm("web1", "running")
    for verb, state in [("paused", "paused"), ("running", "running"), ("reboot", "running"),
                        ("force-stop", "stopped"), ("running", "running"), ("stopped", "stopped")]:
        result = mount.sh(f"echo {verb} > vms/web1/state && cat vms/web1/state")
        assert result.returncode == 0, (verb, result.stderr)
        assert result.stdout == f"{state}\n", verb
    assert "reboot requested" in (mount.vm("web1") / "events").read_text()


def test_bad_state_is_einval_at_write_and_changes_nothing(mount):
    mount.mkvm("web1")
    before = mount.service.get_vm("web1")
    kinds = events_of(mount, "web1")
    result = mount.sh("echo flying > vms/web1/state")
    assert result.returncode == 1, result.stderr
    assert f"write error: {EINVAL}" in result.stderr  # from write(), so echo reports it
    assert mount.service.get_vm("web1") == before
    assert events_of(mount, "web1") == kinds
    assert mount.service.list_events("web1")[-1]["kind"] == "refused"  # the audit trail has it


def test_a_failed_operation_is_eio_with_the_reason_in_events(mount, tmp_path):
    vm = mount.mkvm("web1")
    spec = json.loads((vm / "spec.json").read_text())
    # The test driver cannot run QEMU monitor commands, so this start fails after the domain starts.
    spec["network"]["port_forwards"] = [{"host_port": 18022, "guest_port": 22}]
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert mount.sh(f"cp {tmp_path / 'spec.json'} vms/web1/spec.json").returncode == 0
    result = mount.sh("echo running > vms/web1/state")
    assert result.returncode == 1 and f"write error: {os.strerror(errno.EIO)}" in result.stderr, result.stderr
    assert "operation-failed: start failed" in (vm / "events").read_text()


def test_an_unterminated_bad_value_is_refused_at_close(mount):
    """No newline and refused: perhaps the first part of a split value, so the refusal comes at close."""
    vm = mount.mkvm("web1")
    with pytest.raises(OSError) as caught, open(vm / "state", "w") as f:
        f.write("flying")
    assert caught.value.errno == errno.EINVAL
    assert mount.service.get_vm("web1")["desired_state"] == "stopped"


def test_pausing_a_stopped_vm_is_ebusy(mount):
    mount.mkvm("web1")
    result = mount.sh("echo paused > vms/web1/state")
    assert result.returncode == 1 and f"write error: {EBUSY}" in result.stderr, result.stderr
    assert mount.service.get_vm("web1")["desired_state"] == "stopped"


def test_cpus_and_memory(mount):
    vm = mount.mkvm("web1")
    result = mount.sh("echo 2 > vms/web1/cpus && echo 1G > vms/web1/memory && printf 512M > vms/web1/memory")
    assert result.returncode == 0, result.stderr
    spec = mount.service.get_vm("web1")["spec"]
    assert (spec["cpus"], spec["memory"]) == (2, 512)
    assert (vm / "cpus").read_text() == "2\n" and (vm / "memory").read_text() == "512\n"
    before = mount.service.get_vm("web1")
    for command in ("echo 0 > vms/web1/cpus", "echo lots > vms/web1/cpus", "echo 1T0 > vms/web1/memory",
                    "echo 1 > vms/web1/memory"):
        result = mount.sh(command)
        assert result.returncode == 1 and f"write error: {EINVAL}" in result.stderr, (command, result.stderr)
    assert mount.service.get_vm("web1") == before


def test_writing_an_unknown_host_is_enoent(mount):
    """Writing a host live-migrates (tests/fs/test_fs_hosts.py); a host that is not there is ENOENT."""
    mount.mkvm("web1", "running")
    result = mount.sh("echo elsewhere > vms/web1/host")
    assert result.returncode == 1 and f"write error: {ENOENT}" in result.stderr, result.stderr
    assert "no host named 'elsewhere'" in mount.log.read_text()  # the reason is logged
    assert mount.sh("echo local > vms/web1/host").returncode == 0  # where it is: nothing to do


def test_spec_json_by_cp(mount, tmp_path):
    vm = mount.mkvm("web1")
    spec = json.loads((vm / "spec.json").read_text())
    spec["cpus"] = 3
    spec["labels"] = {"tier": "web"}
    good = tmp_path / "good.json"
    good.write_text(json.dumps(spec, indent=2) + "\n")
    result = mount.sh(f"cp {good} vms/web1/spec.json")
    assert result.returncode == 0, result.stderr
    after = mount.service.get_vm("web1")["spec"]
    assert after["cpus"] == 3 and after["labels"] == {"tier": "web"}
    assert json.loads((vm / "spec.json").read_text()) == after

    before = mount.service.get_vm("web1")
    bad_value = tmp_path / "bad.json"
    bad_value.write_text(json.dumps({**spec, "cpus": -1}))
    result = mount.sh(f"cp {bad_value} vms/web1/spec.json")
    assert result.returncode == 1 and f"error writing 'vms/web1/spec.json': {EINVAL}" in result.stderr, \
        result.stderr
    not_json = tmp_path / "broken.json"
    not_json.write_text('{"cpus": 2,')
    result = mount.sh(f"cp {not_json} vms/web1/spec.json")  # incomplete: refused at close, which cp checks
    assert result.returncode == 1 and EINVAL in result.stderr, result.stderr
    image = tmp_path / "image.json"
    image.write_text(json.dumps({**spec, "image": "other"}))
    result = mount.sh(f"cat {image} > vms/web1/spec.json")
    assert result.returncode == 1 and f"write error: {EINVAL}" in result.stderr, result.stderr
    assert mount.service.get_vm("web1") == before


def test_a_value_split_over_several_writes(mount):
    vm = mount.mkvm("web1")
    script = f"""
import json, os, sys
vm = {str(vm)!r}
def write(file, *parts):
    fd = os.open(os.path.join(vm, file), os.O_WRONLY | os.O_TRUNC)
    try:
        for part in parts:
            assert os.write(fd, part.encode()) == len(part)
    finally:
        os.close(fd)
write("state", "run", "ning", "\\n")
write("cpus", "4")
spec = json.load(open(os.path.join(vm, "spec.json")))
spec["labels"] = {{"split": "yes"}}
text = json.dumps(spec, indent=2) + "\\n"
write("spec.json", text[:10], text[10:50], text[50:])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    vm_row = mount.service.get_vm("web1")
    assert vm_row["state"] == "running"
    assert vm_row["spec"]["cpus"] == 4 and vm_row["spec"]["labels"] == {"split": "yes"}


def test_truncate_to_zero_is_accepted_other_sizes_are_not(mount):
    mount.mkvm("web1")
    assert mount.sh("truncate -s 0 vms/web1/state && : > vms/web1/cpus").returncode == 0
    result = mount.sh("truncate -s 5 vms/web1/state")
    assert result.returncode == 1 and EINVAL in result.stderr, result.stderr
    assert mount.service.get_vm("web1")["spec"]["cpus"] == 1


def test_read_only_files_refuse_writes_with_eacces(mount):
    mount.mkvm("web1")
    ro = [f.name for f in VM_FILES.entries if not f.writable]
    for file in ro:
        result = mount.sh(f"echo x > vms/web1/{file}")
        assert result.returncode == 1 and EACCES in result.stderr, (file, result.stderr)
    for command in ("echo x > events", "echo x > images/demo.json", "echo x > templates/default.json",
                    "echo x > hosts/local/uri", "rm vms/web1/state", "echo x > vms/newfile",
                    "chmod 600 vms/web1/state",
                    # a new file in a VM's directory is an editor's temporary file (fs/scratch.py,
                    # tests/fs/test_fs_editors.py): renamed over a read-only one, refused
                    "echo x > vms/web1/t && mv vms/web1/t vms/web1/events; s=$?; rm vms/web1/t; exit $s"):
        result = mount.sh(command)
        assert result.returncode == 1, command
        assert EACCES in result.stderr or "not permitted" in result.stderr, (command, result.stderr)
    assert os.listdir(mount.vm("web1")) == [*VM_FILES, "snapshots", "backups", "disks", "cdroms"]


# -- reads that follow ----------------------------------------------------------------------------
def test_cat_and_stat_agree_with_rest_within_a_second(mount):
    mount.mkvm("web1")
    client = falcon.testing.TestClient(create_app(mount.service, "t"), headers={"Authorization": "Bearer t"})
    assert mount.sh("cat vms/web1/cpus").stdout == "1\n"
    mount.service.update_vm("web1", {"cpus": 7})  # a change made elsewhere (REST, another mount)
    assert mount.sh("cat vms/web1/cpus").stdout == "7\n"  # direct I/O: at once
    time.sleep(1.05)  # the attribute cache
    for file in ("state", "cpus", "memory", "host", "spec.json", "status.json", "events", "domain.xml"):
        body = client.simulate_get(f"/v1/vms/web1/{file}", params={"format": "text"}).text
        assert (mount.vm("web1") / file).read_text() == body, file
        assert os.stat(mount.vm("web1") / file).st_size == len(body.encode()), file
    mount.service.rename_vm("web1", "web2")  # renamed elsewhere: the mount follows within a second
    time.sleep(1.05)
    assert not mount.vm("web1").exists()
    assert (mount.vm("web2") / "cpus").read_text() == "7\n"


def test_tail_f_follows_the_console(mount, held_processes):
    mount.mkvm("web1", "running")
    log = mount.service.console_path("web1")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("first line\n")
    tail = subprocess.Popen(["tail", "-f", str(mount.vm("web1") / "console")], stdout=subprocess.PIPE, text=True)
    held_processes.append(tail)
    assert tail.stdout.readline() == "first line\n"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(tail.stdout.readline() for _ in range(2)), daemon=True)
    reader.start()
    with open(log, "a") as f:
        f.write("vm-appliance demo guest: booted\n")
        f.flush()
        time.sleep(0.3)
        f.write("vm-appliance demo guest: ready\n")
    reader.join(timeout=5)
    assert lines == ["vm-appliance demo guest: booted\n", "vm-appliance demo guest: ready\n"]
    assert os.stat(mount.vm("web1") / "console").st_size == log.stat().st_size


def test_tail_f_follows_the_events(mount, held_processes):
    mount.mkvm("web1")
    tail = subprocess.Popen(["tail", "-n", "0", "-f", str(mount.mnt / "events")], stdout=subprocess.PIPE, text=True)
    held_processes.append(tail)
    time.sleep(0.5)
    assert mount.sh("echo running > vms/web1/state").returncode == 0
    line = tail.stdout.readline()
    assert "web1" in line, line


# -- concurrency ----------------------------------------------------------------------------------
def test_concurrent_writers_on_one_vm(mount):
    mount.mkvm("web1")
    writers = [subprocess.Popen(["bash", "-c", f"echo {value} > vms/web1/{file}"], cwd=mount.mnt,
                                stderr=subprocess.PIPE, text=True)
               for _ in range(4) for file, value in (("state", "running"), ("state", "stopped"),
                                                      ("cpus", "2"), ("cpus", "3"))]
    outcomes = [(w.wait(60), w.stderr.read()) for w in writers]
    for code, err in outcomes:
        assert code == 0 or (code == 1 and f"write error: {EBUSY}" in err), err  # one wins, the other: EBUSY
    assert any(code == 0 for code, _ in outcomes)
    # Nothing torn: the spec is whole and valid, the mount and the service agree once settled.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        vm = mount.service.get_vm("web1")
        busy = [op for op in mount.service.list_operations("web1") if op["status"] in ("pending", "running")]
        if vm["state"] == vm["desired_state"] and not busy:
            break
        time.sleep(0.1)
    assert vm["state"] == vm["desired_state"] in ("running", "stopped")
    assert vm["spec"]["cpus"] in (2, 3)
    assert json.loads((mount.vm("web1") / "spec.json").read_text()) == vm["spec"]
    assert (mount.vm("web1") / "state").read_text() == vm["state"] + "\n"


def test_reads_are_served_while_a_write_waits(tmp_path):
    """No controller: a write waits for its operation, and meanwhile the mount serves everyone else."""
    m = Mount(tmp_path, controller=False)
    writer = None
    try:
        m.start()
        m.service.create_vm({"name": "web1", "state": "stopped"})
        writer = subprocess.Popen(["bash", "-c", "echo 2 > vms/web1/cpus"], cwd=m.mnt, stderr=subprocess.PIPE)
        time.sleep(0.3)
        started = time.monotonic()
        assert m.sh("cat vms/web1/cpus && ls vms").stdout == "2\nweb1\n"
        assert time.monotonic() - started < 1.0
        assert writer.poll() is None  # still waiting for the controller that is not there
    finally:
        # The mount first: a signal does not end a request the mount holds (the writer would sit
        # until the mount's own wait gives up, ~20 s); its stop ends it ("connection abort").
        m.stop()
        if writer is not None:
            stop_process(writer)


# -- the errno table and the boundary ---------------------------------------------------------------
def test_one_table_maps_every_service_error():
    assert operations.errno_of(errors.Invalid("x")) == errno.EINVAL
    assert operations.errno_of(errors.NotFound("x")) == errno.ENOENT
    assert operations.errno_of(errors.Conflict("x")) == errno.EBUSY
    assert operations.errno_of(errors.PreconditionFailed("x")) == errno.EBUSY
    assert operations.errno_of(errors.Forbidden("x")) == errno.EACCES
    assert operations.errno_of(errors.Failed("x")) == errno.EIO
    assert operations.errno_of(errors.Timeout("x")) == errno.EIO
    assert operations.errno_of(KeyError("x")) == errno.EIO


def test_a_surprise_becomes_eio_never_an_escape(caplog):
    class Broken:
        store = None  # the identities read it only for a caller other than root

        def vm_row_read(self, name):  # what a stat of vms/NAME reads
            raise RuntimeError("the store caught fire")

    fs = operations.ApplianceFS(Broken())  # type: ignore[arg-type]
    vms = fs.inodes.remember(("vms",))

    async def lookup():
        with pytest.raises(pyfuse3.FUSEError) as caught:
            await fs.lookup(vms, b"web1", SimpleNamespace(uid=0, gid=0, pid=0))
        return caught.value.errno

    assert trio.run(lookup) == errno.EIO
    assert "the store caught fire" in caplog.text


# -- mounting ----------------------------------------------------------------------------------------
def test_sigterm_unmounts_and_a_stale_mount_is_cleared(tmp_path):
    m = Mount(tmp_path)
    try:
        m.start()
        m.mkvm("web1")
        stop_process(m.proc)
        assert not is_mounted(m.mnt)  # SIGTERM: unmounted cleanly
        m.start()
        os.kill(m.proc.pid, 9)  # a crash leaves the mount behind
        m.proc.wait()
        assert is_mounted(m.mnt)
        result = subprocess.run(["ls", str(m.mnt)], capture_output=True, text=True, check=False)
        assert "Transport endpoint is not connected" in result.stderr
        m.start()  # the next start clears it
        assert sorted(os.listdir(m.mnt / "vms")) == ["web1"]
    finally:
        m.stop()


def test_ctrl_c_then_serves_sigterm_still_unmounts(tmp_path):
    """`make run`, Ctrl-C: the terminal sends SIGINT to serve and to its mount child, and serve
    at once stops its children with SIGTERM. That SIGTERM came while the mount was unmounting,
    after its signal receiver had closed, and killed it there: the mount stayed behind, stale
    ("Transport endpoint is not connected"), until the next start (found following the
    README, session 16)."""
    m = Mount(tmp_path)
    try:
        for _ in range(3):
            m.start()
            if not (m.mnt / "vms" / "web1").exists():
                m.mkvm("web1")
            os.kill(m.proc.pid, signal.SIGINT)  # the terminal's
            os.kill(m.proc.pid, signal.SIGTERM)  # serve's terminate(), at once
            m.proc.wait(timeout=30)
            assert not is_mounted(m.mnt), "the mount was left behind"
    finally:
        m.stop()


def test_vmctl_mount_standalone(tmp_path):
    m = Mount(tmp_path, controller=False)
    m.start()  # makes the home and its store
    m.service.create_vm({"name": "web1", "state": "stopped"})
    m.stop()
    mnt = tmp_path / "standalone"
    log = tmp_path / "vmctl-mount.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "--home", str(m.home), "mount", str(mnt)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_mounted(mnt, proc, log)
        assert os.listdir(mnt / "vms") == ["web1"]
        with open("/proc/self/mountinfo") as f:
            line = next(line for line in f if f" {mnt} " in line)
        # root's mount lets others in; the map decides what they get (test_fs_identity.py)
        assert "vm-appliance" in line and "default_permissions" in line and "allow_other" in line
    finally:
        stop_process(proc)
        unmount(mnt)
    assert not is_mounted(mnt)


def test_other_users_cannot_use_the_mount(tmp_path, open_dir):
    m = Mount(tmp_path, mnt=open_dir / "mnt")
    try:
        m.start()
        m.mkvm("web1")
        result = as_nobody("ls vms; cat vms/web1/state; echo 2 > vms/web1/cpus", m.mnt)
        assert result.stderr.count(EACCES) == 3, result.stderr
        assert m.service.get_vm("web1")["spec"]["cpus"] == 1
    finally:
        m.stop()


def test_allow_group_lets_its_members_in_and_nobody_else(tmp_path, open_dir):
    m = Mount(tmp_path, mnt=open_dir / "mnt", group="operator")
    try:
        m.start()
        m.mkvm("web1")
        gid = grp.getgrnam("operator").gr_gid
        info = os.stat(m.vm("web1") / "cpus")
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (os.getuid(), gid, 0o666)
        result = as_nobody("ls vms; cat vms/web1/state; echo 2 > vms/web1/cpus", m.mnt)
        assert result.stderr.count(EACCES) == 3, result.stderr
        result = as_nobody("cat vms/web1/state && echo 2 > vms/web1/cpus && mkdir vms/web2", m.mnt, str(gid))
        assert result.returncode == 0, result.stderr
        assert result.stdout == "stopped\n"
        assert m.service.get_vm("web1")["spec"]["cpus"] == 2
        result = as_nobody("echo x > vms/web1/events", m.mnt, str(gid))  # read-only stays read-only
        assert result.returncode == 1 and EACCES in result.stderr
    finally:
        m.stop()


def test_inode_table_counts_lookups_and_honours_forget():
    inodes = operations.Inodes()
    state = inodes.remember(("vms", "a", "state"))
    assert inodes.remember(("vms", "a", "state")) == state  # stable while remembered
    inodes.remember(("vms", "a"))
    inodes.move(("vms", "a"), ("vms", "b"))  # a rename keeps the numbers
    assert inodes.path(state) == ("vms", "b", "state") and inodes.inode(("vms", "b", "state")) == state
    inodes.forget(state, 1)
    assert inodes.path(state) == ("vms", "b", "state")  # one lookup left
    inodes.forget(state, 1)
    with pytest.raises(errors.NotFound):
        inodes.path(state)
    assert inodes.inode(("vms", "b", "state")) != state  # a new number after the kernel forgot it
    inodes.drop(("vms", "b"))
    assert ("vms", "b") not in inodes.by_path and inodes.path(pyfuse3.ROOT_INODE) == ()
