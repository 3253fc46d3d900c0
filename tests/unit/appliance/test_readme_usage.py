"""The README's vmctl usage block names every command, subcommand and option the
parser has (issue 16 found flags missing from it): a new flag fails this test until
the block shows it."""
from __future__ import annotations

import argparse
import re

from appliance.cli.parser import build_parser
from tests.appliance_process import ROOT

GLOBAL_ONLY = {"--help"}


def usage_words() -> set[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## vmctl\n\n```\n", 1)[1].split("```", 1)[0]
    return set(re.findall(r"[-\w]+", block))


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield path + (name,), None
                yield from walk(sub, path + (name,))
        elif action.option_strings and not GLOBAL_ONLY & set(action.option_strings):
            yield path, action.option_strings


def test_the_usage_block_names_every_command_and_option():
    words = usage_words()
    missing = []
    for path, options in walk(build_parser(), ()):
        if options is None:
            if path[-1] not in words:
                missing.append(" ".join(path))
        elif not words & set(options):
            missing.append(f"{' '.join(path)} {'/'.join(options)}")
    assert not missing, f"README.md's usage block lacks: {missing}"


def test_the_check_sees_a_missing_option():
    words = usage_words() - {"--max-cpus"}
    assert any(options == ["--max-cpus"] and not words & set(options)
               for _path, options in walk(build_parser(), ()) if options)
