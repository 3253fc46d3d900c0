"""vmctl's main() run in the test's process: its exit code (a SystemExit's too) and what it
printed, for the CLI tests that drive it with argv."""
from __future__ import annotations

from appliance.cli import main


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err
