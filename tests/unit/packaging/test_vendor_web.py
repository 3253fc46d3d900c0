"""packaging/vendor-web.py: a tarball is checked against its pinned sha512 before
anything is written, and only plain files the page needs leave it."""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "packaging" / "vendor-web.py"
spec = importlib.util.spec_from_file_location("vendor_web", SCRIPT)
assert spec is not None and spec.loader is not None
vendor_web = importlib.util.module_from_spec(spec)
sys.modules["vendor_web"] = vendor_web  # its dataclasses look their module up there
spec.loader.exec_module(vendor_web)


def tarball(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def package(data: bytes) -> object:
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    return vendor_web.Package("@x/lib", "1.0.0", f"sha512-{digest}", "lib", ("core/", "LICENSE"))


HOSTILE = tarball([
    (member("package/core/a.js"), b"export const a = 1;\n"),
    (member("package/core/sub/b.mjs"), b"export default 2;\n"),
    (member("package/LICENSE"), b"MIT\n"),
    (member("package/core/../../../escape.js"), b"bad"),
    (member("/abs/core/x.js"), b"bad"),
    (member("package/core/link.js", tarfile.SYMTYPE, "/etc/passwd"), None),
    (member("package/core/hard.js", tarfile.LNKTYPE, "package/LICENSE"), None),
    (member("package/core/dev.js", tarfile.CHRTYPE), None),
    (member("package/core/run.sh"), b"bad"),
    (member("package/other/c.js"), b"not taken"),
])


def test_only_the_plain_files_asked_for_are_unpacked(tmp_path):
    dest = tmp_path / "vendor"
    count = vendor_web.unpack(package(HOSTILE), HOSTILE, dest)
    written = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert written == ["lib/LICENSE", "lib/core/a.js", "lib/core/sub/b.mjs"] and count == 3
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert not (tmp_path / "escape.js").exists()


def test_a_tarball_that_is_not_the_pinned_one_is_refused(monkeypatch):
    pinned = package(HOSTILE)

    class Answer(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(vendor_web.urllib.request, "urlopen",
                        lambda url, timeout: Answer(HOSTILE + b"tampered"))
    with pytest.raises(SystemExit, match="integrity mismatch"):
        vendor_web.fetch(pinned)
    monkeypatch.setattr(vendor_web.urllib.request, "urlopen", lambda url, timeout: Answer(HOSTILE))
    assert vendor_web.fetch(pinned) == HOSTILE


def test_the_pins_are_sha512_and_the_urls_the_registry_s():
    for pinned in vendor_web.PACKAGES:
        assert pinned.integrity.startswith("sha512-")
        assert len(base64.b64decode(pinned.integrity.removeprefix("sha512-"))) == 64
        assert pinned.tarball.startswith("https://registry.npmjs.org/@")
