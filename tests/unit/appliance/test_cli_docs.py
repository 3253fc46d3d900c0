"""vmctl completion bash|zsh (shtab) and the man page (argparse-manpage, `make man`),
both made from the parser (issue 16): every command is in them, and they work."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.cli.parser import build_parser
from appliance.cli.target import subcommand_parsers
from tests.appliance_process import ROOT

COMMANDS = sorted(next(a for a in build_parser()._actions if a.dest == "command").choices)


def script(capsys, shell: str) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


def complete(path: Path, words: list[str]) -> list[str]:
    """What bash's completion offers for the last of words (as after a Tab)."""
    line = " ".join(f"'{w}'" if " " in w else w for w in words)
    program = (f"source {path}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
               "_shtab_vmctl; printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True,
                          timeout=30, check=True)
    return done.stdout.split()


def test_bash_completion_completes_commands_options_and_files(capsys, tmp_path):
    path = tmp_path / "vmctl.bash"
    path.write_text(script(capsys, "bash"))
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)
    assert sorted(complete(path, ["vmctl", ""])) == COMMANDS
    assert complete(path, ["vmctl", "remote", "sw"]) == ["switch"]
    assert complete(path, ["vmctl", "host", "list", "--js"]) == ["--json"]  # after it too
    assert "--forward" in complete(path, ["vmctl", "create", "web1", "--f"])
    (tmp_path / "user-data.yaml").write_text("#cloud-config\n")
    assert complete(path, ["vmctl", "create", "web1", "--user-data", f"{tmp_path}/user-"]) == [
        f"{tmp_path}/user-data.yaml"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_is_a_compdef_zsh_loads(capsys, tmp_path):
    (tmp_path / "_vmctl").write_text(script(capsys, "zsh"))
    subprocess.run(["zsh", "-n", str(tmp_path / "_vmctl")], check=True, timeout=30)
    done = subprocess.run(["zsh", "-f", "-c", f"fpath=({tmp_path} $fpath); autoload -Uz compinit; "
                           f"compinit -u -d {tmp_path}/dump; print ${{_comps[vmctl]}}"],
                          capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == "_vmctl"


def test_zsh_completion_names_every_command(capsys):
    text = script(capsys, "zsh")
    assert text.startswith("#compdef vmctl")
    for command in COMMANDS:
        assert f"\n    {command}:" in text, command


ROFF_REQUESTS = {".TH", ".SH", ".TP", ".B"}


def test_the_man_page_has_every_command_and_default(tmp_path):
    """As `make man` makes it (the same module, function and options)."""
    out = tmp_path / "vmctl.1"
    tool = Path(sys.executable).parent / "argparse-manpage"
    env = {k: v for k, v in os.environ.items() if k not in ("VMAPPLIANCE_HOME", "VMAPP_HOME")}
    subprocess.run([str(tool), "--module", "appliance.cli.docs", "--function", "man_parser",
                    "--prog", "vmctl", "--project-name", "vm-appliance", "--version", "9.9",
                    "--output", str(out)], env={**env, "PYTHONPATH": str(ROOT)}, check=True,
                   timeout=120)
    page = out.read_text()
    plain = page.replace("\\-", "-")  # roff's escaped hyphens
    for parser in subcommand_parsers(build_parser()):
        if not any(a.dest in ("action", "command") and a.choices for a in parser._actions
                   if not a.option_strings):  # a leaf: it has its own section
            assert f"COMMAND \\fI\\,'{parser.prog}'" in plain, parser.prog
    # roff reads a line starting with "." as a request: only the page's own are
    assert {line.split()[0] for line in page.splitlines() if line.startswith(".")} <= ROFF_REQUESTS
    # the global options once, on vmctl itself, with their defaults
    assert plain.count("--remote NAME") == 1
    flat = " ".join(plain.split())
    assert "(default: $PWD/.appliance)" in flat
    assert "(default: qemu:///system)" in flat
    if shutil.which("man"):
        shown = subprocess.run(["man", "-l", str(out)], capture_output=True, text=True,
                               env={**env, "MANWIDTH": "100"}, timeout=60, check=True).stdout
        assert re.search(r"home DIR\s+the +appliance's +home", shown), shown[:3000]


def _with_vmctl_on_path(tmp_path: Path, **env: str) -> dict[str, str]:
    """An environment whose `vmctl` is this checkout's (as the .deb's /usr/bin/vmctl)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "vmctl").write_text(f'#!/bin/sh\nexec {sys.executable} -m appliance.cli "$@"\n')
    (bindir / "vmctl").chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
            **env}


def test_bash_and_zsh_complete_vm_names_from_vmctl_list(vmctl, capsys, tmp_path):
    """Where a command takes a VM's name, the shell offers those `vmctl list` shows
    (the same environment: here VMCTL_URL and VMCTL_TOKEN of a served app); not
    where a name is new (create)."""
    for name in ("web1", "web2", "db1"):
        assert vmctl("create", name, "--no-wait")[0] == 0
    path = tmp_path / "vmctl.bash"
    path.write_text(script(capsys, "bash"))
    env = _with_vmctl_on_path(tmp_path, VMCTL_COMPLETE_SECONDS="60")  # generous under load

    def offered(words: list[str]) -> list[str]:
        program = (f"source {path}; COMP_WORDS=({' '.join(words)}); "
                   f"COMP_CWORD={len(words) - 1}; _shtab_vmctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        done = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True,
                              timeout=120, check=True, env=env)
        return done.stdout.split()

    assert offered(["vmctl", "stop", "web"]) == ["web1", "web2"]
    assert sorted(offered(["vmctl", "disk", "list", ""])) == ["db1", "web1", "web2"]
    assert offered(["vmctl", "create", "web"]) == []
    if shutil.which("zsh"):
        zsh = tmp_path / "_vmctl"
        zsh.write_text(script(capsys, "zsh"))
        # the completer alone, with compadd showing what it is given
        program = (f"eval \"$(sed -n '/^_vmctl_vm_names()/,/^}}/p' {zsh})\"; "
                   "compadd() { print -l -- ${(P)2} }; _vmctl_vm_names")
        done = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True,
                              timeout=120, check=True, env=env)
        assert sorted(done.stdout.split()) == ["db1", "web1", "web2"], done.stderr


def test_vm_name_completion_is_quiet_when_the_appliance_does_not_answer(capsys, tmp_path):
    path = tmp_path / "vmctl.bash"
    path.write_text(script(capsys, "bash"))
    env = _with_vmctl_on_path(tmp_path, VMCTL_URL="http://127.0.0.1:1", VMCTL_TOKEN="x",
                              VMCTL_CONFIG=str(tmp_path / "none.toml"))
    for name in ("VMAPPLIANCE_URL", "VMAPPLIANCE_TOKEN", "VMAPPLIANCE_REMOTE"):
        env.pop(name, None)
    program = (f"source {path}; COMP_WORDS=(vmctl stop w); COMP_CWORD=2; _shtab_vmctl; "
               "printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True,
                          timeout=120, check=True, env=env)
    assert (done.stdout.strip(), done.stderr) == ("", "")


def test_vm_name_completion_offers_only_vm_names_never_runs_the_servers_answer(capsys,
                                                                                tmp_path):
    """The names are what the server answered (a remote's, not this machine's to
    trust): bash's compgen -W expands each word it is given, so a name such as
    $(touch FILE) ran FILE's command at the Tab. Only DNS labels are offered."""
    path = tmp_path / "vmctl.bash"
    path.write_text(script(capsys, "bash"))
    ran = tmp_path / "ran"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    listing = ["NAME  STATE", f"$(touch${{IFS}}{ran})  running", f"`touch {ran}`  running",
               "web1  running", "Web2  running", "web3$x  running"]
    (bindir / "vmctl").write_text("#!/bin/sh\nprintf '%s\\n' " + " ".join(
        "'" + line.replace("'", "'\\''") + "'" for line in listing) + "\n")
    (bindir / "vmctl").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "VMCTL_COMPLETE_SECONDS": "60"}
    program = (f"source {path}; COMP_WORDS=(vmctl stop ''); COMP_CWORD=2; _shtab_vmctl; "
               "printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True,
                          timeout=120, check=True, env=env)
    assert not ran.exists()
    assert done.stdout.split() == ["web1"], done.stdout
