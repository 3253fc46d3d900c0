"""templates/ in the mount (issue 14, part C), by real shell commands on a real FUSE
mount over libvirt's test driver: cp and echo create, a write replaces, rm deletes,
refusals are errnos with nothing changed and a `refused` event, and who may change
which template follows the policy table and the service (other uids via setpriv)."""
from __future__ import annotations

import errno
import json
import os
import stat
import time

from appliance.access import mountmap
from appliance.access.principal import SYSTEM, acting_as
from appliance.service.templates import DEFAULT_TEMPLATE
from tests.fs.conftest import Mount
from tests.fs.test_fs_identity import refusals, run_as

EINVAL = os.strerror(errno.EINVAL)
EACCES = os.strerror(errno.EACCES)
ENOENT = os.strerror(errno.ENOENT)
EEXIST = os.strerror(errno.EEXIST)
OPS = 5200  # the gid of web's operators in the map
OPERATOR = 5201


def test_cp_echo_cat_and_rm(mount, tmp_path):
    source = tmp_path / "small.json"
    source.write_text(json.dumps({"cpus": 1, "memory": "512M",
                                  "disks": [{"name": "data", "size": "10G"}]}))
    result = mount.sh(f"cp {source} templates/ && ls templates")
    assert (result.returncode, result.stdout) == (0, "default.json\nsmall.json\n"), result.stderr
    small = mount.service.get_template("small")
    assert small["spec"] == {"cpus": 1, "memory": 512, "disks": [{"name": "data", "size": 10240}]}
    assert json.loads((mount.mnt / "templates" / "small.json").read_text()) == small["spec"]
    assert stat.S_IMODE(os.stat(mount.mnt / "templates" / "small.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(mount.mnt / "templates" / "default.json").st_mode) == 0o400

    # a create from it; then a write replaces the template and the VM stays as it was
    made = mount.service.create_vm({"name": "web1", "template": "small", "state": "stopped"})[0]
    result = mount.sh("""echo '{"cpus": 2}' > templates/small.json""")
    assert result.returncode == 0, result.stderr
    assert mount.service.get_template("small")["revision"] == 2
    assert json.loads((mount.mnt / "templates" / "small.json").read_text()) == {"cpus": 2}
    vm = mount.service.get_vm("web1")
    assert vm["spec"] == made["spec"] and vm["template"] == {"name": "small", "revision": 1}
    status = json.loads((mount.vm("web1") / "status.json").read_text())
    assert status["template"] == {"name": "small", "revision": 1}

    # mkdir still gets the default (and records it)
    mount.mkvm("web2")
    assert mount.service.get_vm("web2")["template"] == {"name": "default", "revision": 1}
    assert mount.service.get_vm("web2")["spec"]["cpus"] == DEFAULT_TEMPLATE["cpus"]

    result = mount.sh("rm templates/small.json && ls templates")
    assert (result.returncode, result.stdout) == (0, "default.json\n"), result.stderr
    assert mount.service.get_vm("web1")["spec"] == made["spec"]
    result = mount.sh("rm templates/nope.json")
    assert result.returncode == 1 and ENOENT in result.stderr, result.stderr


def test_bad_templates_are_einval_change_nothing_and_leave_a_refused_event(mount):
    assert mount.sh("""echo '{"cpus": 1}' > templates/small.json""").returncode == 0
    for command in ("""echo '{"cpus": 0}' > templates/bad.json""",
                    """echo '{"gpus": 1}' > templates/bad.json""",
                    """echo '{"name": "x"}' > templates/bad.json""",
                    """echo '[1]' > templates/bad.json""",
                    # not JSON: applied at close, where a careful writer (tee) sees the error
                    "echo 'not json' | tee templates/bad.json >/dev/null",
                    """echo '{"memory": "lots"}' > templates/small.json"""):
        result = mount.sh(command)
        assert result.returncode == 1 and EINVAL in result.stderr, (command, result.stderr)
    # templates/t.txt is an editor's temporary file (fs/scratch.py): renamed, it is a write,
    # refused with EINVAL (which mv words as "a subdirectory of itself", rename(2)'s meaning)
    result = mount.sh("""echo '{}' > templates/t.txt && mv templates/t.txt templates/Bad_Name.json""")
    assert result.returncode == 1 and "subdirectory of itself" in result.stderr, result.stderr
    assert mount.sh("rm templates/t.txt").returncode == 0
    for command in ("""echo '{}' > templates/Bad_Name.json""",
                    """echo x > templates/default.json""", "rm templates/default.json"):
        result = mount.sh(command)
        assert result.returncode == 1 and (EACCES in result.stderr or EINVAL in result.stderr), \
            (command, result.stderr)
    assert os.listdir(mount.mnt / "templates") == ["default.json", "small.json"]
    small = mount.service.get_template("small")
    assert (small["revision"], small["spec"]) == (1, {"cpus": 1})
    refused = [e["message"] for e in mount.service.list_events() if e["kind"] == "refused"]
    assert any("templates/bad.json" in m for m in refused), refused
    assert any("templates/small.json" in m for m in refused), refused


def test_operators_make_their_project_s_templates_and_only_admins_change_global_ones(
        tmp_path, open_dir):
    m = Mount(tmp_path, mnt=open_dir / "mnt")
    try:
        m.start()
        store = m.service.store
        store.insert_project({"name": "web", "description": "", "quota": {}, "created": time.time()})
        mountmap.set_group(store, str(OPS), "operator", "web")
        m.service.create_template({"name": "small", "spec": {"cpus": 1}, "global": True})
        time.sleep(2.1)  # the mount reads its map again at most every 2 s
        as_operator = {"cwd": m.mnt, "groups": (OPS,)}
        result = run_as(OPERATOR, """echo '{"cpus": 2}' > templates/web-box.json && ls templates""",
                        **as_operator)
        assert (result.returncode, result.stdout) == (0, "default.json\nsmall.json\nweb-box.json\n"), \
            result.stderr
        with acting_as(SYSTEM.in_project("web")):
            assert m.service.get_template("web-box")["project"] == "web"
        assert "web-box.json" not in os.listdir(m.mnt / "templates")  # root acts in default
        for command in ("""echo '{"cpus": 8}' > templates/small.json""", "rm templates/small.json",
                        """echo '{"cpus": 8}' > templates/small2.json && true"""):
            run_as(OPERATOR, command, **as_operator)
        assert run_as(OPERATOR, "rm templates/small.json", **as_operator).stderr.count(EACCES) == 1
        small = m.service.get_template("small")
        assert (small["revision"], small["spec"]) == (1, {"cpus": 1})
        assert any("templates/small.json" in r for r in refusals(m)), refusals(m)
        result = m.sh("""echo '{"cpus": 4}' > templates/small.json""")  # root: an admin
        assert result.returncode == 0, result.stderr
        assert m.service.get_template("small")["spec"] == {"cpus": 4}
        result = run_as(OPERATOR, "rm templates/web-box.json && ls templates", **as_operator)
        assert (result.returncode, result.stdout) == (0, "default.json\nsmall.json\nsmall2.json\n"), \
            result.stderr
    finally:
        m.stop()
