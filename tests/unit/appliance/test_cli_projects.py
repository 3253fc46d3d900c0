"""vmctl project add / list / show / quota / backup / delete, against the real REST app over HTTP."""
from __future__ import annotations

import json



def test_add_quota_show_list_delete(vmctl, service):  # noqa: F811 - the fixture
    code, out, _ = vmctl("project", "add", "web", "--description", "the web team")
    assert (code, out) == (0, "web: added\n")
    code, out, err = vmctl("project", "quota", "web", "--vms", "5", "--cpus", "8", "--memory", "16G",
                           "--disk", "200G")
    assert code == 0, err
    assert service.get_project("web")["quota"] == {"vms": 5, "cpus": 8, "memory_mib": 16384,
                                                   "disk_gib": 200}
    lines = out.splitlines()
    assert lines[0].split() == ["name", "web"] and lines[1].split() == ["description", "the", "web", "team"]
    assert lines[2].split() == ["backup", "-"]  # no policy
    assert [line.split() for line in lines[3:]] == [
        ["RESOURCE", "USED", "LIMIT"], ["vms", "0", "5"], ["cpus", "0", "8"],
        ["memory_mib", "0", "16384"], ["disk_gib", "0", "200"]]
    code, _, _ = vmctl("project", "quota", "web", "--vms", "unlimited", "--disk", "1T")
    assert service.get_project("web")["quota"] == {"vms": None, "cpus": 8, "memory_mib": 16384,
                                                   "disk_gib": 1024}
    code, out, _ = vmctl("project", "show", "web")
    assert ["vms", "0", "unlimited"] in [line.split() for line in out.splitlines()]
    code, out, _ = vmctl("project", "list")
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["NAME", "VMS", "CPUS", "MEMORY_MIB", "DISK_GIB", "DESCRIPTION"]
    assert rows[2][:5] == ["web", "0/-", "0/8", "0/16384", "0/1024"]
    code, out, _ = vmctl("--json", "project", "show", "web")
    assert json.loads(out)["quota"]["cpus"] == 8
    assert vmctl("project", "delete", "web")[:2] == (0, "web: deleted\n")


def test_refusals_are_said_with_their_reason(vmctl, service):  # noqa: F811 - the fixture
    vmctl("project", "add", "web")
    code, _, err = vmctl("project", "quota", "web", "--memory", "lots")
    assert code == 1 and "quota.memory_mib" in err and "not a size" in err
    code, _, err = vmctl("project", "delete", "default")
    assert code == 1 and "cannot be deleted" in err
    assert service.get_project("web")["quota"]["memory_mib"] is None
    code, _, err = vmctl("project", "show", "nope")
    assert code == 1 and "no project named 'nope'" in err


def test_backup_policy_set_shown_and_removed(vmctl, service):  # noqa: F811 - the fixture
    vmctl("project", "add", "web")
    code, out, err = vmctl("project", "backup", "web", "--schedule", "daily 02:00", "--target", "nas",
                           "--keep-daily", "7", "--keep-weekly", "4")
    assert code == 0, err
    assert service.get_project("web")["backup"] == {"schedule": "daily 02:00", "target": "nas",
                                                    "keep_daily": 7, "keep_weekly": 4, "full_every": 6}
    assert "backup       daily 02:00 -> nas, keep_daily 7, keep_weekly 4, full_every 6" in out
    # Replaced whole: what is not given again is gone.
    code, out, _ = vmctl("project", "backup", "web", "--keep-last", "3")
    assert service.get_project("web")["backup"] == {"keep_last": 3, "full_every": 6}
    assert "backup       manual backups only, keep_last 3, full_every 6" in out
    code, _, err = vmctl("project", "backup", "web", "--schedule", "every day", "--keep-last", "1")
    assert code == 1 and "backup.schedule" in err and "daily HH:MM" in err
    assert service.get_project("web")["backup"] == {"keep_last": 3, "full_every": 6}
    code, out, _ = vmctl("project", "backup", "web", "--none")
    assert code == 0 and service.get_project("web")["backup"] is None
    assert "backup       -" in out
