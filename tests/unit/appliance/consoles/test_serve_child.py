"""`vmctl serve` supervises the console broker as its child "consoles", with
the mount or without it (--no-mount), and the metadata service unless --no-metadata."""
import dataclasses
import sys

from appliance.serve import extra_children


def test_the_broker_is_a_child_with_or_without_the_mount(config, monkeypatch):
    started = []
    monkeypatch.setattr("appliance.serve.spawn_child", lambda args, env, log: started.append(args))
    monkeypatch.setattr("fs.mount.clear_stale", lambda point: None)
    without = extra_children(dataclasses.replace(config, mount=None, metadata_service=False), {})
    assert list(without) == ["consoles"]
    without["consoles"]()
    assert started[-1] == [sys.executable, "-m", "appliance.consoles", "--home", str(config.home)]
    with_mount = extra_children(dataclasses.replace(config, mount="mnt"), {})
    assert sorted(with_mount) == ["consoles", "metadata", "mount"]
    with_mount["metadata"]()
    assert started[-1] == [sys.executable, "-m", "appliance.metadata", "--home", str(config.home)]
