"""vmctl host ssh-key | trust: the appliance's own credentials for remote hosts,
made in (and read from) this machine's --home, with no server needed.

    vmctl host ssh-key            the public key a qemu+ssh host must authorize
    vmctl host trust NAME... --out DIR
                                  a server certificate from the appliance's CA for a
                                  qemu+tls host known by NAME... (names or
                                  addresses), with the CA certificate, for its libvirtd
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from appliance.cli.output import print_json
from appliance.config import Config

ACTIONS = ("ssh-key", "trust")
_ADDRESS = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]{2,45}\]?")


def add_host_access_commands(hosts: argparse._SubParsersAction) -> None:
    hosts.add_parser("ssh-key", help="the appliance's ssh public key (made on first use): append "
                                     "it to root's ~/.ssh/authorized_keys on each qemu+ssh host")
    t = hosts.add_parser("trust", help="a TLS server certificate from the appliance's CA for a "
                                       "qemu+tls host's libvirtd, written to --out")
    t.add_argument("address", nargs="+", metavar="NAME",
                   help="the host's DNS names and addresses, as the appliance dials it")
    t.add_argument("--out", required=True, metavar="DIR",
                   help="folder for cacert.pem, servercert.pem, serverkey.pem (0600)")


def _config(home: str) -> Config:
    path = Path(home)
    return Config.load(path) if (path / "config.json").exists() else Config(home=path)


def cmd_host_access(args: argparse.Namespace) -> int:
    config = _config(args.home)
    if args.action == "ssh-key":
        from appliance import ssh_access

        key = ssh_access.public_key(config.ssh_dir)
        if args.json:
            print_json({"public_key": key, "file": str(ssh_access.key_path(config.ssh_dir))})
        else:
            print(key)
        return 0
    from appliance import host_pki

    bad = [a for a in args.address if not _ADDRESS.fullmatch(a)]
    if bad:
        print(f"vmctl host trust: {bad[0]!r} is not a host name or an IP address",
              file=sys.stderr)
        return 2
    placed = host_pki.issue_server(config.pki_dir, Path(args.out).absolute(), args.address)
    if args.json:
        print_json({"files": placed})
        return 0
    print(f"server certificate for {', '.join(args.address)} from the CA in {config.pki_dir}; "
          "install on the host:")
    for source, target in placed.items():
        print(f"  {source} -> {target}")
    print("then in /etc/libvirt/libvirtd.conf listen_tls = 1, and libvirtd with --listen "
          "(or libvirtd-tls.socket); add it as qemu+tls://NAME/system")
    return 0
