"""vmctl key add / list / show / rm against the real REST app over HTTP (issue 15)."""
from __future__ import annotations

import io
import json
import sys

import pytest

from tests.unit.appliance.test_keys import ED


def test_add_from_a_file_and_stdin_list_show_and_remove(vmctl, service, tmp_path, monkeypatch):
    pub = tmp_path / "id_ed25519.pub"
    pub.write_text(ED + "\n")
    code, out, err = vmctl("key", "add", "laptop", str(pub))
    assert (code, out) == (0, "laptop: added (ssh-ed25519 256 "
                              "SHA256:wFesm9R2nJTYZBd/tdqGPqEk207v2y9sc5mKTb3n+V4)\n"), err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(ED.encode())))
    code, out, err = vmctl("--json", "key", "add", "desk", "-")
    assert code == 0 and json.loads(out)["public_key"] == ED, err
    code, out, _ = vmctl("key", "list")
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["NAME", "TYPE", "BITS", "FINGERPRINT", "CREATED"]
    assert [r[:3] for r in rows[1:]] == [["desk", "ssh-ed25519", "256"],
                                         ["laptop", "ssh-ed25519", "256"]]
    code, out, _ = vmctl("key", "show", "laptop")
    assert out.splitlines()[1] == ED
    assert vmctl("key", "rm", "laptop")[:2] == (0, "laptop: removed\n")
    code, _out, err = vmctl("key", "show", "laptop")
    assert code != 0 and "no SSH key named 'laptop'" in err


def test_a_bad_key_file_is_refused_with_the_reason(vmctl, tmp_path, capsys):
    bad = tmp_path / "id_dsa.pub"
    bad.write_text("ssh-dss AAAAB3NzaC1kc3M= me\n")
    code, _out, err = vmctl("key", "add", "old", str(bad))
    assert code != 0 and "not allowed" in err
    with pytest.raises(SystemExit) as exit_:  # a usage error, before any request
        vmctl("key", "add", "old", str(tmp_path / "missing.pub"))
    assert exit_.value.code == 2 and "cannot read" in capsys.readouterr().err
