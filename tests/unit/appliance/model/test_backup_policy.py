"""The backup policy in a VM's spec (`backup`) and on its own (a project's)."""
from __future__ import annotations

import pytest

from appliance.errors import Invalid
from appliance.model.backup_policy import effective_policy, validate_policy
from appliance.model.schema import spec_components
from appliance.model.spec import validate

BASE = {"name": "web1", "image": "demo"}


def test_a_spec_without_a_policy_has_none():
    assert validate(BASE)["backup"] is None
    assert validate({**BASE, "backup": None})["backup"] is None


def test_a_spec_policy_is_stored_with_its_defaults_and_without_nulls():
    spec = validate({**BASE, "backup": {"schedule": "daily 02:00", "target": "nas",
                                        "keep_daily": 7, "keep_weekly": None}})
    assert spec["backup"] == {"schedule": "daily 02:00", "target": "nas", "keep_daily": 7,
                              "full_every": 6}


def test_a_policy_without_a_schedule_is_for_manual_backups():
    assert validate_policy({"keep_last": 3}) == {"keep_last": 3, "full_every": 6}


@pytest.mark.parametrize(("policy", "field"), [
    ({"schedule": "daily 25:00", "keep_daily": 1}, "backup.schedule"),
    ({"schedule": "daily 02:00"}, "backup"),
    ({"keep_last": None, "keep_daily": None}, "backup"),
    ({"keep_monthly": 10_001}, "backup.keep_monthly"),
    ({"keep_hourly": 1.5}, "backup.keep_hourly"),
    ({"keep_weekly": True}, "backup.keep_weekly"),
    ({"keep_last": 1, "full_every": 101}, "backup.full_every"),
    ({"keep_last": 1, "full_every": None, "target": "Nas"}, "backup.target"),
    ({"keep_last": 1, "path": "/"}, "backup"),
    ([], "backup"),
])
def test_a_bad_policy_is_refused_in_the_spec_and_alone_with_the_same_field(policy, field):
    with pytest.raises(Invalid) as in_spec:
        validate({**BASE, "backup": policy})
    with pytest.raises(Invalid) as alone:
        validate_policy(policy)
    assert in_spec.value.field == alone.value.field == field
    assert in_spec.value.reason == alone.value.reason


def test_the_first_fault_of_a_spec_is_still_its_earlier_fields():
    with pytest.raises(Invalid) as err:
        validate({**BASE, "cpus": 0, "backup": {"schedule": "x"}})
    assert err.value.field == "cpus"


def test_a_vms_own_policy_wins_over_its_projects_whole():
    own, project = {"keep_last": 1}, {"schedule": "hourly", "keep_daily": 3}
    assert effective_policy(own, project) is own
    assert effective_policy(None, project) is project
    assert effective_policy(None, None) is None


def test_the_openapi_document_has_the_policy_from_the_model():
    components = spec_components()
    policy = components["BackupPolicy"]
    assert set(policy["properties"]) == {"schedule", "target", "keep_last", "keep_hourly",
                                         "keep_daily", "keep_weekly", "keep_monthly",
                                         "full_every"}
    assert policy["properties"]["full_every"]["maximum"] == 100
    assert components["Spec"]["properties"]["backup"]["nullable"] is True
