"""vmctl admin backup | restore: the appliance's own store and configuration
(appliance/home_backup.py, appliance/home_restore.py), on this machine's home,
with no server needed (a restore needs the appliance stopped)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.cli.output import print_json


def add_admin_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("admin", help="back up or restore the appliance's own store and config "
                                     "(on this machine's --home)")
    actions = p.add_subparsers(dest="action", required=True)
    b = actions.add_parser("backup", help="write the store (a consistent copy, also while the "
                                          "appliance runs) and the config to FILE (tar, mode 0600)")
    b.add_argument("file", metavar="FILE")
    b.add_argument("--force", action="store_true", help="replace FILE if it exists")
    r = actions.add_parser("restore", help="put FILE's store and config back (the appliance "
                                           "stopped); the replaced files are kept in "
                                           "HOME/pre-restore-TIME/")
    r.add_argument("file", metavar="FILE")
    r.add_argument("--config-file", dest="config_file", metavar="PATH",
                   help="also put the archive's settings file (the serve's --config, e.g. "
                        "/etc/vm-appliance/config.toml) at PATH; without it that file is "
                        "left as it is")


def cmd_admin(args: argparse.Namespace) -> int:
    from appliance.home_backup import BackupError, backup

    try:
        if args.action == "backup":
            manifest = backup(Path(args.home), Path(args.file), replace=args.force)
            summary = {"file": str(Path(args.file).absolute()),
                       "schema_version": manifest["schema_version"],
                       "counts": manifest["counts"], "files": sorted(manifest["files"]),
                       "config_file": manifest["config_file"]}
        else:
            from appliance.home_restore import restore

            summary = restore(Path(args.home), Path(args.file),
                              Path(args.config_file) if args.config_file else None)
    except BackupError as err:
        print(f"vmctl admin {args.action}: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"vmctl admin {args.action}: {err.strerror or err}"
              f"{f' ({err.filename})' if err.filename else ''}", file=sys.stderr)
        return 1
    if args.json:
        print_json(summary)
        return 0
    counts = summary["counts"]
    what = f"schema v{summary['schema_version']}, {counts.get('vms', 0)} VMs, " \
           f"{counts.get('hosts', 0)} hosts, {len(summary['files']) - 1} config files"
    if args.action == "backup":
        settings = f" (with the settings file {summary['config_file']})" \
            if summary["config_file"] else ""
        print(f"{summary['file']}: {what}{settings}")
    else:
        due = summary["migrations_due"]
        print(f"restored {summary['archive']} into {summary['home']} ({what})")
        print(f"the files it replaced are in {summary['aside']}")
        if due:
            print(f"the next start migrates the store ({due} migration{'s' if due > 1 else ''})")
        for line in _settings_lines(summary.get("config_file")):
            print(line)
    return 0


def _settings_lines(settings: dict | None) -> list[str]:
    """What a restore did with the serve's settings file (none: nothing to say)."""
    if settings is None:
        return []
    source = settings["archived_from"] or "the serve's --config"
    if settings["restored_to"]:
        return [f"the settings file (from {source}) restored to {settings['restored_to']}"]
    return [f"the archive's settings file (from {source}) was not restored: "
            f"--config-file {settings['archived_from'] or 'PATH'} puts it back"]
