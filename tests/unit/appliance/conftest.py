"""Fixtures shared by the vmctl unit tests (test_cli_*.py) and by the service's
tests of projects (teams)."""
from __future__ import annotations

import pytest

from appliance.api.app import create_app
from appliance.cli import main
from tests.unit.appliance.teams import add_project
from tests.unit.http_served import HttpServed

CLI_TOKEN = "cli-token"


@pytest.fixture
def vmctl(service, config, monkeypatch, capsys):
    """vmctl's main() in process against the real REST app served over HTTP in a thread:
    run(*argv) -> (exit status, stdout, stderr)."""
    served = HttpServed(create_app(service, CLI_TOKEN))
    for name in ("VMAPPLIANCE_URL", "VMAPPLIANCE_TOKEN", "VMAPPLIANCE_REMOTE"):  # they would win
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VMCTL_CONFIG", str(config.home.parent / "vmctl.toml"))  # no remotes
    monkeypatch.setenv("VMCTL_URL", served.url)
    monkeypatch.setenv("VMCTL_TOKEN", CLI_TOKEN)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--home", str(config.home), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    served.stop()


@pytest.fixture
def teams(service):
    """The service with two projects, web and db."""
    for name in ("web", "db"):
        add_project(service.store, name)
    return service
