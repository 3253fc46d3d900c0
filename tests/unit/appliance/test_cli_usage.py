"""Every bad flag or value is one line naming the flag and exit status 2, never a
traceback (issue 16): a table of the malformed values people type, and a walk over
the whole parser giving every subcommand an unknown option and every checked option
a malformed value."""
from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from appliance.cli import main
from appliance.cli.parser import build_parser

HOME = ["--home", "/nonexistent-home"]  # nothing here may need one

MALFORMED = [
    (["create", "w", "--forward", "8022"], "--forward", "HOSTPORT:GUESTPORT"),
    (["create", "w", "--forward", "a:b"], "--forward", "'a' is not a port"),
    (["create", "w", "--forward", "8022:70000"], "--forward", "is not a port"),
    (["create", "w", "--forward", "8022:22/sctp"], "--forward", "HOSTPORT:GUESTPORT"),
    (["create", "w", "--disk", "data"], "--disk", "NAME:SIZE"),
    (["create", "w", "--disk", "data:lots"], "--disk", "is not a size"),
    (["create", "w", "--user-data", "/nonexistent"], "--user-data", "No such file"),
    (["create", "w", "--meta-data", "/"], "--meta-data", "cannot read /"),
    (["create", "w", "--ip", "1.2.3"], "--ip", "not an IPv4 address"),
    (["create", "w", "--ip", "10.0.0.5"], "--ip", "--network network:NAME"),
    (["create", "w", "--ip", "10.0.0.5", "--network", "user"], "--ip", "libvirt network"),
    (["create", "w", "--network", "bridge"], "--network", "none, user or network:NAME"),
    (["create", "w", "--network", "network:"], "--network", "none, user or network:NAME"),
    (["create", "w", "--network", "none", "--forward", "80:80"], "--forward", "user networking"),
    (["create", "w", "--memory", "2Q"], "--memory", "is not a size"),
    (["create", "w", "--cpus", "two"], "--cpus", "invalid int value"),
    (["create", "w", "--topology", "2x2"], "--topology", "SOCKETSxCORESxTHREADS"),
    (["create", "w", "--label", "novalue"], "--label", "KEY=VALUE"),
    (["create", "w", "--run-strategy", "Sometimes"], "--run-strategy", "invalid choice"),
    (["create", "w", "--frobnicate"], "--frobnicate", "unrecognized arguments"),
    (["create"], "name", "required"),
    (["set", "w", "--max-memory", "much"], "--max-memory", "is not a size"),
    (["serve", "--listen", "8080"], "--listen", "HOST:PORT"),
    (["serve", "--listen", "[::1:8080"], "--listen", "HOST:PORT"),
    (["serve", "--workers", "0"], "--workers", "at least 1"),
    (["exporter", "--listen", "localhost"], "--listen", "HOST:PORT"),
    (["host", "add", "h2", "qemu:///system", "--cpu-ratio", "nan"], "--cpu-ratio", "positive"),
    (["host", "add", "h2", "qemu:///system", "--ram-ratio", "-1"], "--ram-ratio", "positive"),
    (["host", "state", "h2", "asleep"], "state", "invalid choice"),
    (["console", "w", "--history", "-5"], "--history", "whole number"),
    (["pool", "create", "p", "--replicas", "many"], "--replicas", "whole number"),
    (["pool", "scale", "p", "-1"], "replicas", "whole number"),
    (["network", "add", "n", "--dhcp", "10.0.0.1-x"], "--dhcp", "START-END"),
    (["disk", "resize", "w", "data", "huge"], "size", "is not a size"),
    (["cdrom", "insert", "w", "first", "iso"], "index", "invalid int value"),
    (["images", "upload", "x", "/nonexistent.qcow2"], "path", "No such file"),
    (["images", "upload", "x"], "upload", "NAME PATH"),
    (["images", "delete"], "delete", "NAME"),
]


def refusal(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*HOME, *argv])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2, err
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err  # one line
    return err


@pytest.mark.parametrize(("argv", "option", "said"), MALFORMED,
                         ids=[" ".join(case[0]) for case in MALFORMED])
def test_a_malformed_value_is_one_line_naming_the_option(capsys, argv, option, said):
    err = refusal(capsys, argv)
    assert option in err and said in err, err
    words = [word for word in argv if not word.startswith("-")][:2]
    assert err.startswith("vmctl " + words[0]), err  # said by the subcommand's parser


def test_the_process_says_it_in_one_line_without_a_traceback():
    done = subprocess.run([sys.executable, "-m", "appliance.cli", *HOME, "create", "w",
                           "--forward", "8022"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("vmctl create: argument --forward: '8022' is not "
                           "HOSTPORT:GUESTPORT[/udp], e.g. 8022:22 (see vmctl create --help)\n")


# -- the walk over every subcommand ---------------------------------------------------
SAMPLES = ["x", "1", "1G", "a=b", "127.0.0.1:1", "1x1x1", "data:1G", "10.0.0.1", "https://lab:1", "-"]


def _value(action: argparse.Action) -> str:
    """A value this argument takes."""
    if action.choices:
        return str(next(iter(action.choices)))
    for sample in SAMPLES:
        try:
            if action.type is not None:
                action.type(sample)  # type: ignore[operator]
            return sample
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            continue
    raise AssertionError(f"no sample value fits {action.dest}")


def leaves(parser: argparse.ArgumentParser, words: list[str]) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    """(the words that reach it, the parser) of every subcommand without subcommands."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield words, parser
        return
    for name, child in subs[0].choices.items():
        yield from leaves(child, [*words, name])


def required_words(parser: argparse.ArgumentParser) -> list[str]:
    """The positionals and required options the parser needs, with values it takes."""
    words: list[str] = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if not action.option_strings and action.nargs not in ("?", "*"):
            words.append(_value(action))
        elif action.option_strings and action.required:
            words += [action.option_strings[0], _value(action)]
    return words


LEAVES = list(leaves(build_parser(), []))


def test_the_walk_finds_every_subcommand():
    commands = {words[0] for words, _ in LEAVES}
    assert {"create", "serve", "host", "pool", "template", "network", "disk", "restore",
            "mount-map", "user", "token", "project"} <= commands
    assert len(LEAVES) > 60


@pytest.mark.parametrize(("words", "parser"), LEAVES, ids=[" ".join(w) for w, _ in LEAVES])
def test_every_subcommand_refuses_an_unknown_option_after_it(capsys, words, parser):
    err = refusal(capsys, [*words, *required_words(parser), "--no-such-option"])
    prog = " ".join(["vmctl", *words])
    assert err == f"{prog}: unrecognized arguments: --no-such-option (see {prog} --help)\n"


def _checked_options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """The options whose values are checked as they are parsed (a type or choices)."""
    for action in parser._actions:
        if action.option_strings and (action.choices or action.type not in (None, str)):
            yield action


CHECKED = [(words, parser, action) for words, parser in LEAVES
           for action in _checked_options(parser)]


@pytest.mark.parametrize(("words", "parser", "action"), CHECKED,
                         ids=[f"{' '.join(w)} {a.option_strings[-1]}" for w, _, a in CHECKED])
def test_every_checked_option_refuses_a_malformed_value_by_name(capsys, words, parser, action):
    bad = "%not a value%"
    if action.type is not None and not action.choices:
        try:
            action.type(bad)  # type: ignore[operator]
            pytest.skip(f"{action.option_strings[-1]} takes any text")
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            pass
    err = refusal(capsys, [*words, *required_words(parser), action.option_strings[-1], bad])
    assert f"argument {'/'.join(action.option_strings)}: " in err, err
