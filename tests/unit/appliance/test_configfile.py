"""/etc/vm-appliance/config.toml (appliance/configfile.py): the shipped example is
what the generator makes from the Config dataclass, every key of it documented;
read back, it is Config's defaults; a wrong key or value stops serve with its name."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from appliance import configfile
from appliance.cli import main
from appliance.config import Config

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "packaging" / "deb" / "config.toml"


def test_the_shipped_example_is_what_the_generator_makes():
    assert SHIPPED.read_text() == configfile.example(), (
        "packaging/deb/config.toml is stale: python -m appliance.configfile > packaging/deb/config.toml")


def test_every_key_of_config_is_in_the_example_with_its_comment():
    text = configfile.example()
    docs = configfile.field_docs()
    names = [f.name for f in dataclasses.fields(Config) if f.name not in configfile.INTERNAL]
    for name in names:
        assert docs[name], f"Config.{name} has no comment"
        assert re.search(rf"^(# )?{name} = ", text, re.MULTILINE), name
    assert "config_version" not in text and "config_file" not in text
    # the comment printed above a key is its field's (here: one of the longer ones)
    assert "Port forwards are bound by QEMU" in text.split("allow_privileged_ports =")[0]


def test_the_example_with_every_key_uncommented_is_config_s_defaults():
    uncommented = re.sub(r"^# (\w+ = )", r"\1", configfile.example(), flags=re.MULTILINE)
    for field in configfile.keys():
        assert re.search(rf"^{field.name} = ", uncommented, re.MULTILINE), field.name
    parsed = configfile.parse(uncommented, "/elsewhere")
    assert parsed == Config(home=Path(configfile.PACKAGE_HOME))


def test_the_example_as_shipped_is_the_defaults_with_the_package_home():
    assert configfile.parse(SHIPPED.read_text(), "/elsewhere") == Config(home=Path("/var/lib/vm-appliance"))


def test_keys_override_defaults_and_empty_string_is_none():
    config = configfile.parse(
        'listen = "0.0.0.0:8443"\nworkers = 4\nwait_timeout = 30\nmount = ""\n'
        'metrics_public = true\nhost_socket_dirs = ["/run/x"]\n', "/srv/home")
    assert config.home == Path("/srv/home")  # the file has none: the default home
    assert (config.listen, config.workers, config.mount, config.metrics_public) == (
        "0.0.0.0:8443", 4, None, True)
    assert config.wait_timeout == 30.0 and isinstance(config.wait_timeout, float)
    assert config.host_socket_dirs == ["/run/x"]


@pytest.mark.parametrize("text, message", [
    ("listn = \"x\"\n", "listn: no such key"),
    ("workers = \"2\"\n", "workers: expected int"),
    ("workers = true\n", "workers: expected int"),
    ("metrics_public = 1\n", "metrics_public: expected bool"),
    ("accel = \"fast\"\n", "accel: 'fast' is not one of auto, kvm, tcg"),
    ("mount = 3\n", "mount: expected str (or \"\" for none)"),
    ("host_socket_dirs = [1]\n", "host_socket_dirs: expected list[str]"),
    ("home = \"relative/home\"\n", "home: 'relative/home' must be an absolute path"),
    ("config_version = 1\n", "config_version: no such key"),
    ("listen = \n", "not TOML"),
])
def test_a_wrong_key_or_value_is_refused_with_its_name(text, message):
    with pytest.raises(configfile.ConfigFileError) as err:
        configfile.parse(text, "/srv/home")
    assert message in str(err.value)


def test_serve_with_a_bad_config_file_exits_2_naming_file_and_key(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text("workers = \"many\"\n")
    assert main(["--home", str(tmp_path / "h"), "serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vmctl serve: {path}: workers: expected int")
    assert not (tmp_path / "h").exists()  # refused before anything is made
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: No such file or directory" in capsys.readouterr().err
