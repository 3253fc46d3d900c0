"""Editors and shells in the mount (issue 16): real `sed -i`, vim, nano and Python
saves through a temporary file renamed over spec.json (fs/scratch.py), `cp FILE
images/` and `rm images/NAME.json` (fs/image_imports.py), checked by exit status,
stderr, the store and the events."""
from __future__ import annotations

import errno
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest

from appliance.access.principal import SYSTEM, acting_as
from appliance.api.app import create_app
from fs import scratch
from tests.fs.conftest import ROOT, Mount, refused, run
from tests.fs.fs_server import make_disk_image

EINVAL = os.strerror(errno.EINVAL)
OPS, ADMINS, VIEWERS = 5200, 5201, 5202  # gids of the map's groups (no group entries)
ALICE, BOB, ANN, VIC = 5011, 5012, 5013, 5014  # alice, bob: operators; ann: admin; vic: viewer


def cpus(m: Mount, vm: str = "web1") -> int:
    return m.service.get_vm(vm)["spec"]["cpus"]


def saves(m: Mount, vm: str = "web1") -> list[str]:
    """The audit trail's records of writes of the VM (what the mount did for it)."""
    return [f"{e['kind']} {e['message']}" for e in m.service.list_events(vm)
            if e["kind"] in ("write", "refused")]


def no_leftovers(m: Mount, directory: str) -> None:
    listed = set(os.listdir(m.mnt / directory))
    assert not {name for name in listed if scratch.is_scratch_name((*Path(directory).parts, name))}


# -- saves through a temporary file -----------------------------------------------------------
def test_sed_i_saves_spec_json_as_one_write(mount):
    mount.mkvm("web1")
    run(mount, """sed -i 's/"cpus": 1/"cpus": 2/' vms/web1/spec.json""")
    assert cpus(mount) == 2
    assert json.loads((mount.vm("web1") / "spec.json").read_text())["cpus"] == 2
    # One write of spec.json in the audit trail; the temporary file left no record and no name.
    assert saves(mount)[-2:] == ["write mkdir vms/web1", "write write vms/web1/spec.json"]
    no_leftovers(mount, "vms/web1")


@pytest.mark.parametrize("options", [(), ("-u", "DEFAULTS"), ("-N", "--cmd", "set backupcopy=no")])
def test_a_vim_save(mount, options):
    """vim as Debian starts it (compatible, swap file in the directory), with its defaults
    (nocompatible), and told to save by renaming (backupcopy=no)."""
    if shutil.which("vim") is None:
        pytest.skip("vim is not installed (apt install vim)")
    mount.mkvm("web1")
    result = subprocess.run(["vim", "-i", "NONE", *options, "-es", "-c", '%s/"cpus": 1/"cpus": 3/',
                             "-c", "wq", "vms/web1/spec.json"], cwd=mount.mnt, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert cpus(mount) == 3
    no_leftovers(mount, "vms/web1")  # its swap file went


def _drive_nano(path: Path, keys: list[bytes]) -> int:
    """nano in a pseudo-terminal, typed at."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: nano, with no rc file
        os.environ["TERM"] = "xterm"
        os.execvp("nano", ["nano", "--ignorercfiles", "--locking", str(path)])  # noqa: S606, S607

    def drain(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    os.read(fd, 65536)
                except OSError:
                    return

    drain(1.5)
    for key in keys:
        os.write(fd, key)
        drain(0.5)
    return os.waitpid(pid, 0)[1]


def test_a_nano_save(mount):
    if shutil.which("nano") is None:
        pytest.skip("nano is not installed (apt install nano)")
    mount.mkvm("web1")
    # ^\ replace "cpus": 1 with "cpus": 2 (all), ^O Enter writes, ^X leaves.
    status = _drive_nano(mount.vm("web1") / "spec.json", [
        b"\x1c", b'"cpus": 1\r', b'"cpus": 2\r', b"a", b"\x0f", b"\r", b"\x18"])
    assert status == 0
    assert cpus(mount) == 2
    no_leftovers(mount, "vms/web1")  # its lock file went


def test_a_python_os_replace_save_and_a_refused_one(mount):
    vm = mount.mkvm("web1")
    script = f"""
import json, os, sys, tempfile
vm = {str(vm)!r}
spec = json.load(open(os.path.join(vm, "spec.json")))
def save(cpus):
    fd, tmp = tempfile.mkstemp(dir=vm, prefix=".spec.json.")
    with os.fdopen(fd, "w") as f:
        json.dump({{**spec, "cpus": cpus}}, f)
    try:
        os.replace(tmp, os.path.join(vm, "spec.json"))
    except OSError as err:
        print(err.errno, os.path.exists(tmp))
        os.unlink(tmp)
save(4)
save(-1)
print(sorted(n for n in os.listdir(vm) if n.startswith(".")))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    # The refused rename: EINVAL, its temporary file still there for its writer to remove.
    assert result.stdout.splitlines() == [f"{errno.EINVAL} True", "[]"]
    assert cpus(mount) == 4
    events = [e for e in mount.service.list_events("web1") if e["kind"] == "refused"]
    assert events[-1]["message"] == "write vms/web1/spec.json"
    assert events[-1]["result"].startswith("EINVAL Invalid: ")
    assert "rename: EINVAL" in mount.log.read_text()  # and the appliance's log


def test_a_refused_sed_i_changes_nothing_and_says_why(mount):
    mount.mkvm("web1")
    before = mount.service.get_vm("web1")
    result = mount.sh("""sed -i 's/"cpus": 1/"cpus": 0/' vms/web1/spec.json""")
    assert result.returncode != 0 and EINVAL in result.stderr, result.stderr
    assert mount.service.get_vm("web1") == before
    last = mount.service.list_events("web1")[-1]
    assert (last["kind"], last["message"]) == ("refused", "write vms/web1/spec.json")
    no_leftovers(mount, "vms/web1")  # sed removed its temporary file


def test_a_template_and_a_pool_are_saved_the_same_way(mount):
    run(mount, """echo '{"cpus": 1, "memory": 256}' > templates/small.json""")
    run(mount, """sed -i 's/"cpus": 1/"cpus": 2/' templates/small.json""")
    assert mount.service.get_template("small")["spec"]["cpus"] == 2
    no_leftovers(mount, "templates")
    run(mount, "mkdir pools/web")
    run(mount, """sed -i 's/"cpus": 1/"cpus": 2/' pools/web/template.json""")
    assert json.loads((mount.mnt / "pools/web/template.json").read_text())["cpus"] == 2


def test_temporary_files_are_bounded_and_stay_in_their_directory(mount):
    mount.mkvm("web1")
    mount.mkvm("web2")
    names = " ".join(f"vms/web1/t{i}" for i in range(scratch.PER_DIR))
    run(mount, f"touch {names}")
    refused(mount, "touch vms/web1/one-more", errno.ENOSPC)
    run(mount, f"rm {names}")
    refused(mount, f"head -c {scratch.MAX_BYTES + 1} /dev/zero > vms/web1/big", errno.EFBIG)
    refused(mount, "touch vms/web1/$'bad\\nname'", errno.EINVAL)
    # A rename into another directory is EXDEV (mv copies instead: a plain write).
    run(mount, "echo 3 > vms/web1/n")
    script = f"import os; os.rename({str(mount.vm('web1') / 'n')!r}, {str(mount.vm('web2') / 'cpus')!r})"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert "Invalid cross-device link" in result.stderr
    assert cpus(mount, "web2") == 1
    # A VM's own files are not temporary files, and no path reaches the host.
    refused(mount, "ln -s /etc/shadow vms/web1/x", errno.EACCES)
    refused(mount, "mv vms/web1/spec.json vms/web1/spec.json~", errno.EACCES)
    assert not list(mount.home.glob("**/n"))


@pytest.fixture
def team(tmp_path, open_dir) -> Iterator[Mount]:
    """A shared mount: OPS operate the default project, ADMINS administer it, VIEWERS view it."""
    m = Mount(tmp_path, mnt=open_dir / "mnt")
    try:
        m.start()
        for gid, role in ((OPS, "operator"), (ADMINS, "admin"), (VIEWERS, "viewer")):
            result = subprocess.run([sys.executable, "-m", "appliance.cli", "--home", str(m.home),
                                     "mount-map", "group", str(gid), "--role", role, "--project", "default"],
                                    cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
            assert result.returncode == 0, result.stderr
        time.sleep(2.1)  # the mount reads its map again at most every 2 s (fs/identity.py)
        m.mkvm("web1")
        yield m
    finally:
        m.stop()


def as_uid(uid: int, gid: int, command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "bash", "-c",
                           command], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_temporary_files_are_their_writers_own(team):
    m = team
    web1 = "vms/web1"
    made = as_uid(ALICE, OPS, f"echo '{{}}' > {web1}/mine && ls -a {web1} && cat {web1}/mine", m.mnt)
    assert made.returncode == 0 and "mine" in made.stdout.split(), made.stderr
    # Bob, of the same group: he does not see it, cannot read, take, replace or remove it.
    for command, code in ((f"cat {web1}/mine", errno.ENOENT), (f"mv {web1}/mine {web1}/spec.json", errno.ENOENT),
                          (f"rm {web1}/mine", errno.ENOENT), (f"echo x > {web1}/mine", errno.EEXIST)):
        result = as_uid(BOB, OPS, command, m.mnt)
        assert result.returncode != 0 and os.strerror(code) in result.stderr, (command, result.stderr)
    assert "mine" not in as_uid(BOB, OPS, f"ls -a {web1}", m.mnt).stdout.split()
    # A viewer may not make one (it would change spec.json), and is told so in the events.
    result = as_uid(VIC, VIEWERS, f"""sed -i 's/"cpus": 1/"cpus": 2/' {web1}/spec.json""", m.mnt)
    assert result.returncode != 0 and os.strerror(errno.EACCES) in result.stderr, result.stderr
    # Alice's save through it is hers: one write of spec.json, by her uid.
    result = as_uid(ALICE, OPS, f"""sed -i 's/"cpus": 1/"cpus": 2/' {web1}/spec.json""", m.mnt)
    assert result.returncode == 0, result.stderr
    assert cpus(m) == 2
    with acting_as(SYSTEM):
        last = [e for e in m.service.list_events("web1") if e["kind"] == "write"][-1]
    assert (last["message"], last["credential"]) == ("write vms/web1/spec.json", f"uid {ALICE}")


# -- a refused write ---------------------------------------------------------------------------
def test_a_refused_state_write_says_why_in_events_and_the_log(mount):
    mount.mkvm("web1")
    result = mount.sh("echo runing > vms/web1/state")
    assert result.returncode == 1 and f"write error: {EINVAL}" in result.stderr, result.stderr
    events = (mount.vm("web1") / "events").read_text().splitlines()
    assert "refused: write vms/web1/state" in events[-1] and "'runing' is not a state" in events[-1]
    assert "'runing' is not a state" in mount.log.read_text()
    assert mount.service.get_vm("web1")["desired_state"] == "stopped"


# -- images: cp in, rm ---------------------------------------------------------------------------
@pytest.fixture
def small_cap(tmp_path) -> Iterator[Mount]:
    """A mount whose images may have at most 8 MiB."""
    m = Mount(tmp_path, args=("--max-image-bytes", str(8 << 20)))
    try:
        yield m.start()
    finally:
        m.stop()


def imports(m: Mount) -> list[tuple[str, str, int | None]]:
    """The `image-import` operations, oldest first: (image, status, bytes_done)."""
    with acting_as(SYSTEM):
        ops = m.service.list_operations(all_projects=True)
    return [(op["params"]["image"], op["status"], op["bytes_done"]) for op in reversed(ops)
            if op["kind"] == "image-import" and op["vm_id"] is None]


def uploads_left(m: Mount) -> list[str]:
    return [p.name for p in (m.home / "images").iterdir() if p.name.startswith(".upload-")]


def test_cp_imports_an_image_and_rm_deletes_an_unused_one(small_cap, tmp_path):
    m = small_cap
    disk = tmp_path / "debian.img"
    make_disk_image(disk)
    run(m, f"cp {disk} images/debian.img")
    assert sorted(os.listdir(m.mnt / "images")) == ["debian.json", "demo.json"]
    image = json.loads((m.mnt / "images/debian.json").read_text())
    assert image == m.service.get_image("debian")
    assert (image["format"], image["kind"]) == ("qcow2", "disk")  # converted, as an upload is
    assert Path(image["path"]) == m.home / "images/debian.qcow2"
    assert uploads_left(m) == []
    assert imports(m) == [("debian", "succeeded", disk.stat().st_size)]  # its progress, its end
    refused(m, f"cp {disk} images/debian", errno.EEXIST)  # the name is taken
    m.service.finish(m.service.create_vm({"name": "web1", "image": "debian", "state": "stopped"})[1])
    refused(m, "rm images/debian.json", errno.EBUSY)  # a VM uses it
    run(m, "rmdir vms/web1 && rm images/debian.json")
    assert os.listdir(m.mnt / "images") == ["demo.json"]
    assert not (m.home / "images/debian.qcow2").exists()


def test_an_import_is_checked_as_an_upload(small_cap, tmp_path):
    """The image store's rules (tests/unit/test_image_security.py), through `cp`: refused
    at close with EINVAL, nothing kept, a `refused` event with the reason."""
    m = small_cap
    backed = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw",
                    str(backed), "1M"], check=True)
    vmdk = tmp_path / "disk.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(vmdk), "1M"], check=True)
    for source, target in ((backed, "backed.qcow2"), (vmdk, "vmdk.img")):
        result = m.sh(f"cp {source} images/{target}")
        assert result.returncode == 1 and f"failed to close 'images/{target}': {EINVAL}" in result.stderr, \
            result.stderr
    reasons = [e["result"] for e in m.service.list_events() if e["kind"] == "refused"]
    assert any("backing file" in r for r in reasons) and any("vmdk" in r for r in reasons), reasons
    refused(m, "truncate -s 9M images/big.raw", errno.EFBIG)  # past max_image_bytes
    refused(m, "head -c 9M /dev/zero > images/big2.raw", errno.EFBIG)
    for name in ("Bad.qcow2", "a.b.qcow2", "-x.img", "x" * 64):  # not DNS labels
        refused(m, f"touch images/{name}", errno.EINVAL)
    refused(m, "ln -s /etc/shadow images/shadow.img", errno.EACCES)
    refused(m, "echo x > images/demo.json", errno.EACCES)
    assert sorted(os.listdir(m.mnt / "images")) == ["demo.json"]
    assert uploads_left(m) == []
    assert [i["name"] for i in m.service.list_images()] == ["demo"]
    assert [(image, status) for image, status, _ in imports(m)] == [
        ("backed", "failed"), ("vmdk", "failed"), ("big", "failed"), ("big2", "failed")]


def test_an_import_is_its_writers_alone_until_closed(small_cap, tmp_path):
    m = small_cap
    target = m.mnt / "images" / "slow.raw"
    with open(target, "wb") as f:
        f.write(b"\0" * 510)
        f.flush()
        assert "slow.raw" in os.listdir(m.mnt / "images")  # its writer sees it
        assert os.stat(target).st_size == 510  # what arrived
        assert len(uploads_left(m)) == 1  # on disk, in the image store's directory
        with pytest.raises(OSError) as caught:
            open(target, "rb")  # noqa: SIM115 - refused
        assert caught.value.errno == errno.EBUSY
        f.write(b"\x55\xaa" + b"\0" * 4096)  # a boot sector's signature: a raw disk
    assert m.service.get_image("slow")["kind"] == "disk"
    assert "slow.raw" not in os.listdir(m.mnt / "images")
    # rm while it arrives drops it
    with open(m.mnt / "images" / "gone.raw", "wb") as f:
        f.write(b"\0" * 4096)
        f.flush()
        os.unlink(m.mnt / "images" / "gone.raw")
        assert uploads_left(m) == []
    assert [i["name"] for i in m.service.list_images()] == ["demo", "slow"]
    assert imports(m) == [("slow", "succeeded", 510 + 2 + 4096), ("gone", "cancelled", 0)]


# -- one naming in both views -------------------------------------------------------------------
def test_every_json_file_of_the_mount_is_at_the_same_path_under_v1(mount):
    """images/NAME.json, templates/NAME.json, groups/, networks/, backup-targets/: the mount's
    path under /v1/ answers the file's content (appliance/api/file_names.py), and DELETE there
    is the file's rm."""
    client = falcon.testing.TestClient(create_app(mount.service, "t"), headers={"Authorization": "Bearer t"})
    run(mount, """echo '{"cpus": 1}' > templates/small.json && echo '{"policy": "affinity"}' > groups/g.json"""
               """ && echo '{"kind": "isolated", "subnet": "10.78.0.0/24"}' > networks/lab.json""")
    seen = []
    for top in ("images", "templates", "groups", "networks", "backup-targets"):
        for file in os.listdir(mount.mnt / top):
            answer = client.simulate_get(f"/v1/{top}/{file}")
            assert answer.status_code == 200, (top, file, answer.text)
            assert answer.json == json.loads((mount.mnt / top / file).read_text()), (top, file)
            seen.append(f"{top}/{file}")
    assert seen == ["images/demo.json", "templates/default.json", "templates/small.json", "groups/g.json",
                    "networks/lab.json"]
    assert client.simulate_get("/v1/templates/small").json["spec"] == {"cpus": 1}  # REST's own: the template
    assert client.simulate_delete("/v1/groups/g.json").status_code == 204
    assert os.listdir(mount.mnt / "groups") == []
    assert client.simulate_get("/v1/vms/nothing.json").status_code == 404  # only those collections


def test_an_image_import_a_forked_child_closes_is_finished_by_its_last_close(small_cap):
    """A close is not the end of an import while another process still holds the file: a
    shell's child (a subshell, any command it runs: `head ... >&3`) inherits the writer's
    fd and its close (or exit) sent the FLUSH that finished the import, registering what
    had arrived (a truncated image) while the parent went on writing. Found by the
    security review (session 13). The image is finished by the close that leaves no fd
    on it, and is still registered when that close returns."""
    m = small_cap
    part = 64 << 10
    run(m, f"""set -e
        a=$(head -c {part} /dev/zero | tr '\\0' a)
        exec 3>images/whole.raw
        printf '%0510d\\125\\252' 0 >&3   # a boot sector's signature (a raw disk), by a builtin
        (exec 3>&-)                     # a forked child closes its copy of the fd
        printf %s "$a" >&3
        head -c {part} /dev/zero >&3    # a child that writes, then exits (its close)
        printf %s "$a" >&3
        exec 3>&-""")
    size = 512 + 3 * part
    image = m.service.get_image("whole")  # registered when the last close returned
    assert image["virtual_size"] == size, image
    assert "whole.raw" not in os.listdir(m.mnt / "images")
    assert imports(m) == [("whole", "succeeded", size)]
    assert uploads_left(m) == []
