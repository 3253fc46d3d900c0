"""How the README doc test reads sessions and compares output (tests/readme_sessions.py);
the sessions themselves run in tests/integration/test_readme.py."""
from __future__ import annotations

import pytest

from tests.appliance_process import ROOT
from tests.readme_sessions import ReadmeFormatError, Shell, matches, parse


@pytest.mark.parametrize("expected, actual, ok", [
    (["web1: running on local"], "web1: running on local\n", True),
    (["web1: running on local"], "web1: running on h2\n", False),
    (["web1: running on local"], "", False),
    ([], "", True),
    ([], "something\n", False),                                  # nothing shown: nothing printed
    (["a  b"], "a  b   \n\n", True),                             # trailing spaces and blank lines
    (["... web1 write: ok"], "2026-11-30T03:59:01Z web1 write: ok\n", True),
    (["... web1 write: ok"], "2026-11-30T03:59:01Z web2 write: ok\n", False),
    (["took ... s"], "took 4.5 s\n", True),
    (["took ... s"], "took 4.5 s\nmore\n", False),               # `...` in a line stays in that line
    (["first", "...", "last"], "first\nlast\n", True),
    (["first", "...", "last"], "first\nx\ny\nlast\n", True),
    (["first", "...", "last"], "first\nx\n", False),
    (["a.b"], "axb\n", False),                                   # no regex but `...`
    (["(x) [y] *"], "(x) [y] *\n", True),
])
def test_matches(expected, actual, ok):
    assert matches(expected, actual) is ok


def test_parse_blocks_markers_and_outputs():
    text = "\n".join([
        "## Tour", "", "```console", "$ echo a", "a", "$ true", "```", "",
        "<!-- doctest: skip (needs two machines) -->", "```console", "$ ssh h2", "```",
        "<!-- doctest: continue -->", "", "```console", "$ cd /", "$ pwd", "/", "```",
        "```sh", "$ not a session", "```",
    ])
    one, two, three = parse(text)
    assert (one.line, one.section, one.skip, one.continues) == (3, "Tour", None, False)
    assert [(c.command, c.expected) for c in one.commands] == [("echo a", ["a"]), ("true", [])]
    assert two.skip == "needs two machines"
    assert three.continues and [c.command for c in three.commands] == ["cd /", "pwd"]


@pytest.mark.parametrize("text", [
    "<!-- doctest: skip () -->\n```console\n$ x\n```",         # a skip says why
    "<!-- doctest: skip -->\n```console\n$ x\n```",
    "<!-- doctest: sometimes -->\n```console\n$ x\n```",
    "<!-- doctest: continue -->\n\nsome prose\n",                 # a marker before no block
    "```console\noutput first\n$ x\n```",
    "```console\n$ x\n",                                        # not closed
])
def test_parse_refuses(text):
    with pytest.raises(ReadmeFormatError):
        parse(text)


def test_readme_blocks_each_run_or_give_a_reason():
    blocks = parse((ROOT / "README.md").read_text())
    assert len(blocks) > 10
    ran = [b for b in blocks if b.skip is None]
    assert any(b.section == "A first tour" for b in ran) and any(b.section == "A small cluster" for b in ran)


def test_shell_keeps_state_and_reads_each_command(tmp_path):
    shell = Shell(tmp_path, {"PATH": "/usr/bin:/bin"})
    try:
        assert shell.run("cd /; X=1", 10) == ("", 0)
        assert shell.run("pwd; echo $X; echo err >&2", 10) == ("/\n1\nerr\n", 0)
        assert shell.run("printf no-newline; false # a comment", 10) == ("no-newline", 1)
        assert shell.run("cat", 10) == ("", 0)                    # stdin is /dev/null
    finally:
        shell.close()
