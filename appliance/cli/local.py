"""vmctl's commands that run here rather than through the REST API: `serve`
(which runs it), `mount`, `exporter`, and `doctor` (which must work when the
API does not). Each imports what it runs only when called, so that the other
commands stay quick to start."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from appliance.cli.output import print_json
from appliance.config import Config


def cmd_serve(args: argparse.Namespace) -> int:
    from exporter import shared_metrics

    home = Path(args.home)
    config = Config.load(home) if (home / "config.json").exists() else Config(home=home)
    for field in ("listen", "accel", "libvirt_uri", "domain_prefix", "workers", "mount_group"):
        value = getattr(args, field)
        if value is not None:
            setattr(config, field, value)
    if args.no_mount:
        config.mount = None
    elif args.mount is not None:
        config.mount = str(Path(args.mount).absolute())
    # Before appliance.serve imports prometheus_client: this process and its
    # children share their metrics through HOME/run/metrics.
    shared_metrics.enter(config.run_dir / "metrics")
    from appliance.serve import serve

    return serve(config, demo_image=args.demo_image)


def cmd_mount(args: argparse.Namespace) -> int:
    """The file system view alone, in the foreground, against the home's store."""
    from fs.mount import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run(Config.load(args.home), args.path, group=args.allow_group)


def cmd_exporter(args: argparse.Namespace) -> int:
    """Prometheus metrics of one libvirt host, without the API (exporter/standalone.py),
    behind the API's token check with HOME/token unless --public."""
    from exporter.standalone import run

    token = None
    if not args.public:
        config = Config.load(args.home)
        config.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = config.token(create=True)
    return run(args.listen, args.libvirt_uri, token, host_name=args.host_name,
               all_domains=args.all_domains)


def cmd_doctor(args: argparse.Namespace) -> int:
    from appliance.doctor import run_checks

    results = run_checks(args.home)
    if args.json:
        print_json(results)
    else:
        for check in results:
            mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[check["status"]]
            print(f"[{mark}] {check['name']}: {check['detail']}")
            if check.get("fix"):
                print(f"       fix: {check['fix']}")
    return 1 if any(c["status"] == "fail" for c in results) else 0
