"""schemathesis drives the app with requests generated from /v1/openapi.json:
no 5xx, and every answer matches the document (status codes, content types, schemas).

Two depths. The quick default (`make test-unit`): every operation with
QUICK_EXAMPLES generated requests. VMAPP_TESTS_THOROUGH=1 (`make test`, so CI):
THOROUGH_EXAMPLES each, plus schemathesis's coverage phase (the boundary and
just-out-of-bounds value of every field; built at collection, it is most of the cost)."""
import os
import tempfile
from pathlib import Path

import hypothesis
import schemathesis
from schemathesis import checks

from appliance.api.app import create_app
from appliance.config import Config
from appliance.service import Service
from appliance.store import Store
from tests.unit.conftest import TEST_HOST_INFO, make_disk_image

TOKEN = "conformance"
THOROUGH = os.environ.get("VMAPP_TESTS_THOROUGH") == "1"
QUICK_EXAMPLES = 5
THOROUGH_EXAMPLES = 25


def _app():
    home = Path(tempfile.mkdtemp(prefix="vmapp-schemathesis-"))
    config = Config(home=home / "home", libvirt_uri="test:///default", wait_timeout=0.2, max_wait=0.2,
                    allow_test_hosts=True)
    config.prepare()
    store = Store(config.db_path)
    # A fixed clock and a fresh heartbeat: /readyz answers 200 as with a live controller.
    service = Service(store, config, clock=lambda: 1_800_000_000.0)
    # The host as the controller registers it: with its inventory, or the scheduler places nothing there.
    store.upsert_host({"name": "local", "uri": "test:///default", "state": "enabled", "up": 1,
                       "last_seen": 1_800_000_000.0, "info": TEST_HOST_INFO, "cpu_ratio": 16.0, "ram_ratio": 1.5,
                       "disk_ratio": 1.0, "reserved_memory_mib": 0, "labels": {}, "storage": "shared"})
    image = home / "demo.img"
    make_disk_image(image)
    service.import_image_file("demo", image)
    service.create_vm({"name": "web1", "state": "stopped"})
    return create_app(service, TOKEN)


schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", _app())
schema.config.phases.coverage.enabled = THOROUGH


@schema.parametrize()
@hypothesis.settings(max_examples=THOROUGH_EXAMPLES if THOROUGH else QUICK_EXAMPLES, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_api_conforms(case):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"},
        checks=[checks.not_a_server_error, checks.status_code_conformance,
                checks.content_type_conformance, checks.response_schema_conformance],
        excluded_checks=[checks.negative_data_rejection, checks.positive_data_acceptance,
                         checks.missing_required_header, checks.ignored_auth, checks.unsupported_method,
                         checks.use_after_free, checks.ensure_resource_availability],
    )
