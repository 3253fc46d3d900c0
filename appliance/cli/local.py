"""vmctl's commands that run here rather than through the REST API: `serve`
(which runs it), `mount`, `exporter`, and `doctor` (which must work when the
API does not). Each imports what it runs only when called, so that the other
commands stay quick to start."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from appliance import home_lock, sdnotify
from appliance.cli.output import print_json
from appliance.config import Config


def cmd_serve(args: argparse.Namespace) -> int:
    from exporter import shared_metrics

    home = Path(args.home)
    if args.config is not None:  # the .deb's /etc/vm-appliance/config.toml (configfile.py)
        from appliance import configfile

        try:
            config = configfile.load(args.config, home)
        except configfile.ConfigFileError as err:
            print(f"vmctl serve: {err}", file=sys.stderr)
            return 2
        config.config_file = str(Path(args.config).absolute())  # for vmctl admin backup
    else:
        config = Config.load(home) if (home / "config.json").exists() else Config(home=home)
        config.config_file = None
    for field in ("listen", "accel", "libvirt_uri", "domain_prefix", "workers", "mount_group",
                  "tls"):
        value = getattr(args, field)
        if value is not None:
            setattr(config, field, value)
    for field in ("tls_cert", "tls_key"):
        if getattr(args, field) is not None:
            setattr(config, field, str(Path(getattr(args, field)).absolute()))
    if args.no_metadata:
        config.metadata_service = False
    if args.metadata_host_namespace:
        config.metadata_host_namespace = True
    if args.no_mount:
        config.mount = None
    elif args.mount is not None:
        config.mount = str(Path(args.mount).absolute())
    # One serve per home, locked before anything in the home is touched (the
    # metrics directory below is wiped, config.json rewritten, children started);
    # the lock lives as long as this process (appliance/home_lock.py).
    try:
        lock = home_lock.acquire(config.home, config.listen)
    except home_lock.AlreadyServing as err:
        print(f"vmctl serve: {err}", file=sys.stderr)
        return 1
    # Before appliance.serve imports prometheus_client: this process and its
    # children share their metrics through HOME/run/metrics.
    shared_metrics.enter(config.run_dir / "metrics")
    from appliance.serve import serve

    try:
        return serve(config, demo_image=args.demo_image)
    finally:
        shared_metrics.leave(config.run_dir / "metrics")  # its files are in /dev/shm
        lock.release()


def cmd_mount(args: argparse.Namespace) -> int:
    """The file system view alone, in the foreground, against the home's store."""
    from appliance import memtrim
    from fs.mount import run

    sdnotify.configure_logging()
    memtrim.start()  # what a listing freed, given back (appliance/memtrim.py)
    return run(Config.load(args.home), args.path, group=args.allow_group)


def cmd_mount_map(args: argparse.Namespace) -> int:
    """The mount's map, in the home's store directly (see appliance/access/mountmap.py)."""
    import sys

    from appliance.access import mountmap
    from appliance.cli.output import listing
    from appliance.errors import ApplianceError
    from appliance.store import Store

    store = Store(Config.load(args.home).db_path)
    try:
        if args.action == "list":
            columns = [("KIND", "kind"), ("NAME", "unix_name"), ("USER", "user"),
                       ("ROLE", "role"), ("PROJECT", "project"), ("KNOWN", "known")]
            listing(mountmap.entries(store), args.json, dict, columns)
            return 0
        if args.action == "rm":
            mountmap.remove(store, args.kind, args.unix_name)
            return 0
        if args.action == "user":
            entry = mountmap.set_user(store, args.unix_name, args.as_user)
        else:
            entry = mountmap.set_group(store, args.unix_name, args.role, args.project)
    except ApplianceError as err:
        where = f" ({err.field})" if err.field else ""
        print(f"vmctl mount-map: {err.reason}{where}", file=sys.stderr)
        return 1
    if not entry["known"]:
        print(f"vmctl mount-map: note: this machine has no {entry['kind']} named "
              f"{entry['unix_name']!r} yet; the entry counts once it has", file=sys.stderr)
    if args.json:
        print_json(entry)
    return 0


def cmd_exporter(args: argparse.Namespace) -> int:
    """Prometheus metrics of one libvirt host, without the API (exporter/standalone.py),
    behind the API's token check with HOME/token unless --public."""
    from appliance import tls
    from exporter.standalone import run

    # The home's certificate (config tls_cert/tls_key, or the self-signed pair
    # in HOME/tls), on by the listen address unless --tls or --insecure-http.
    config = dataclasses.replace(Config.load(args.home), listen=args.listen,
                                 tls=args.tls or "auto")
    token = None
    if not args.public:
        config.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = config.token(create=True)
    try:
        tls_files = tls.prepare(config)
    except tls.TLSConfigError as err:
        print(f"vmctl exporter: {err}", file=sys.stderr)
        return 2
    appliance = exporter_appliance(args, config)
    if appliance is None and not (args.any_appliance or args.all_domains):
        print(f"vmctl exporter: {config.home} holds no appliance's store: name the appliance "
              "whose domains to report with --appliance ID (the `appliance` attribute of its "
              "domains' <metadata>), or choose --any-appliance or --all-domains", file=sys.stderr)
        return 2
    return run(args.listen, args.libvirt_uri, token, host_name=args.host_name,
               all_domains=args.all_domains, tls_files=tls_files, appliance=appliance)


def exporter_appliance(args: argparse.Namespace, config: Config) -> str | None:
    """Whose domains `vmctl exporter` reports: --appliance, else the instance id of
    HOME's store (appliance/serve.py writes it into every domain's <metadata>);
    None with --any-appliance (or --all-domains, which reports every domain)."""
    if args.any_appliance or args.all_domains:
        return None
    from appliance.store.base import INSTANCE_ID_KEY, read_meta

    return args.appliance or read_meta(config.db_path, INSTANCE_ID_KEY)


def cmd_tls(args: argparse.Namespace) -> int:
    """`vmctl tls fingerprint`: the SHA-256 fingerprint of the home's certificate,
    read from the file: what a client on another machine pins (--fingerprint)."""
    from appliance import tls

    config = Config.load(args.home)
    cert, _ = tls.cert_files(config)
    try:
        pem = cert.read_bytes()
    except OSError as err:
        print(f"vmctl tls: no certificate at {cert} ({err.strerror}): `vmctl serve` makes one "
              "at first start with TLS on", file=sys.stderr)
        return 1
    try:
        fingerprint = tls.fingerprint(pem)
    except ValueError as err:
        print(f"vmctl tls: {cert} is not a PEM certificate: {err}", file=sys.stderr)
        return 1
    if args.json:
        print_json({"certificate": str(cert), "fingerprint": fingerprint})
    else:
        print(fingerprint)
    return 0


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
