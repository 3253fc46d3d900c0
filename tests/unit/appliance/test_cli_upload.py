"""vmctl images upload streams the file (never whole in memory) with a progress bar on a
terminal (issue 16), against the real REST app."""
from __future__ import annotations

import json
import subprocess

import pytest

from appliance.cli import progress


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True,
                   timeout=60)
    with path.open("ab") as grow:  # past a few chunks: the progress has steps to show
        grow.truncate(3 * (1 << 20) + 4096)
    return path


def test_upload_streams_with_a_bar_on_a_terminal(vmctl, image, monkeypatch):
    monkeypatch.setattr("appliance.cli.vms.on_terminal", lambda args: True)
    sizes = []
    real = progress.chunks

    def counted(*args, **kwargs):
        for chunk in real(*args, **kwargs):
            sizes.append(len(chunk))
            yield chunk

    monkeypatch.setattr("appliance.cli.vms.chunks", counted)
    code, out, err = vmctl("images", "upload", "small", str(image))
    assert code == 0, err
    assert out.startswith("small: qcow2, 64 MiB")
    assert sizes == [1 << 20] * 3 + [4096]  # sent in chunks, as read
    frames = err.split("\r")[1:]
    assert frames[0].strip() == "upload [#########.....................]  33%  1.0/3.0 MiB"
    assert frames[-1].startswith("upload [" + "#" * 30 + "] 100%") and err.endswith("\n")


def test_upload_piped_draws_nothing(vmctl, image):
    code, out, err = vmctl("--json", "images", "upload", "small", str(image))
    assert code == 0 and err == ""
    assert json.loads(out)["name"] == "small"
