"""vmctl's commands and options. Defaults shown in --help come from
appliance.model, where the spec takes them from too."""
from __future__ import annotations

import argparse
import os

from appliance.access.principal import ROLES
from appliance.cli.admin import add_admin_commands
from appliance.cli.backups import add_backup_commands
from appliance.cli.disks import add_disk_commands
from appliance.cli.docs import add_completion_command
from appliance.cli.firewall import add_firewall_command, add_rule_options
from appliance.cli.host_access import add_host_access_commands
from appliance.cli.hosts import add_host_set
from appliance.cli.keys import add_key_commands
from appliance.cli.moves import add_move_commands
from appliance.cli.networks import add_network_commands
from appliance.cli.output import pair
from appliance.cli.pools import add_pool_commands
from appliance.cli.projects import add_project_commands
from appliance.cli.remotes import add_remote_commands
from appliance.cli.target import add_global_options, subcommand_parsers, version
from appliance.cli.templates import add_template_commands
from appliance.cli.usage import DefaultsFormatter, Parser
from appliance.cli.values import (
    count,
    ipv4,
    listen_address,
    network,
    new_disk,
    port_forward,
    positive_int,
    ratio,
    size,
    text_file,
)
from appliance.config import DEFAULT_LISTEN
from appliance.model import (
    DEFAULT_CPU_RATIO,
    DEFAULT_CPUS,
    DEFAULT_DISK_RATIO,
    DEFAULT_IMAGE,
    DEFAULT_MEMORY_MIB,
    DEFAULT_NETWORK_TYPE,
    DEFAULT_RAM_RATIO,
    DEFAULT_RUN_STRATEGY,
    GROUP_POLICIES,
    HOST_STATES,
    RUN_STRATEGIES,
)
from appliance.model.cpu import CPU_MODES

# vmctl's VM state subcommands and their help.
STATE_COMMAND_HELP = [("start", "start"),
                      ("stop", "shut down (ACPI, then force after the grace period)"),
                      ("force-stop", "pull the plug"), ("pause", "pause"), ("resume", "resume"),
                      ("reboot", "restart the guest"),
                      ("suspend", "save the guest's memory to disk, free its RAM (start resumes)"),
                      ("shelve", "stop, release its host's vCPUs, memory and disk; keep its disks"),
                      ("unshelve", "place a shelved VM again (the scheduler) and start it")]
MOUNT_GROUP_HELP = ("in the mount, members of GROUP are operators in the default project "
                    "(a `vmctl mount-map` entry for GROUP wins)")


def _tls_choice(p: argparse.ArgumentParser, what: str) -> None:
    """--tls | --insecure-http, stored as config tls "on" | "off" (default: auto)."""
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--tls", dest="tls", action="store_const", const="on", default=None,
                        help=f"serve {what} over HTTPS (the default unless --listen is loopback)")
    choice.add_argument("--insecure-http", dest="tls", action="store_const", const="off",
                        help=f"serve {what} over plain HTTP even on a non-loopback address")


def _no_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-wait", dest="no_wait", action="store_true")


def _add_local_commands(sub: argparse._SubParsersAction) -> None:
    """serve, mount, exporter: the commands that run here (appliance/cli/local.py)."""
    serve = sub.add_parser("serve", help="run the controller and the REST API")
    serve.add_argument("--config", default=None, metavar="FILE",
                       help="settings from this TOML file (the .deb's /etc/vm-appliance/"
                            "config.toml; its `home` wins over --home; flags win over it)")
    serve.add_argument("--listen", default=None, type=listen_address,
                       help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    serve.add_argument("--accel", choices=["auto", "kvm", "tcg"], default=None)
    serve.add_argument("--libvirt-uri", dest="libvirt_uri", default=None)
    serve.add_argument("--domain-prefix", dest="domain_prefix", default=None)
    serve.add_argument("--workers", type=positive_int, default=None)
    serve.add_argument("--demo-image", dest="demo_image", default=None,
                       help="register this file as image 'demo' if there is none")
    mount = serve.add_mutually_exclusive_group()
    mount.add_argument("--mount", default=None, metavar="PATH",
                       help="mount the file system view here (default HOME/mnt)")
    mount.add_argument("--no-mount", dest="no_mount", action="store_true", help="do not mount it")
    serve.add_argument("--no-metadata", dest="no_metadata", action="store_true",
                       help="no metadata service at http://169.254.169.254/ for the guests")
    serve.add_argument("--metadata-host-namespace", dest="metadata_host_namespace",
                       action="store_true",
                       help="serve it in this machine's own network namespace too (hides the "
                            "machine's own 169.254.169.254, a cloud provider's, from the machine)")
    serve.add_argument("--mount-group", dest="mount_group", default=None, metavar="GROUP",
                       help=MOUNT_GROUP_HELP)
    _tls_choice(serve, "the API")
    serve.add_argument("--tls-cert", dest="tls_cert", default=None, metavar="FILE",
                       help="PEM certificate (with --tls-key; default: self-signed, HOME/tls)")
    serve.add_argument("--tls-key", dest="tls_key", default=None, metavar="FILE",
                       help="PEM private key of --tls-cert")

    p = sub.add_parser("mount", help="mount the file system view at PATH, in the foreground")
    p.add_argument("path")
    p.add_argument("--allow-group", dest="allow_group", default=None, metavar="GROUP",
                   help=MOUNT_GROUP_HELP)

    _add_mount_map(sub)

    p = sub.add_parser("exporter",
                       help="serve Prometheus metrics of a libvirt host, for hosts without the API")
    p.add_argument("--listen", required=True, type=listen_address, help="HOST:PORT for /metrics")
    p.add_argument("--libvirt-uri", dest="libvirt_uri", default="qemu:///system")
    p.add_argument("--host-name", dest="host_name", default=None,
                   help="the host label (default: this machine's hostname)")
    p.add_argument("--public", action="store_true",
                   help="serve /metrics without the token "
                        "(default: Bearer HOME/token, made at first start)")
    p.add_argument(
        "--all-domains",
        dest="all_domains",
        action="store_true",
        help="every domain of the host, not only the appliance's (they may be other tenants')",
    )
    p.add_argument("--appliance", default=None, metavar="ID",
                   help="report the domains of this appliance (its instance id, the `appliance` "
                        "of the domains' <metadata>; default: HOME's, if HOME holds its store)")
    p.add_argument("--any-appliance", dest="any_appliance", action="store_true",
                   help="report the domains of every appliance on this libvirtd")
    _tls_choice(p, "/metrics")

    p = sub.add_parser("tls", help="the API's TLS certificate (read from HOME, no server needed)")
    p.add_argument("action", choices=["fingerprint"],
                   help="print its SHA-256 fingerprint, as --fingerprint takes it")


def _add_mount_map(sub: argparse._SubParsersAction) -> None:
    """vmctl mount-map: who the mount's Unix users and groups are (appliance/access/mountmap.py)."""
    p = sub.add_parser("mount-map", help="map Unix users and groups to appliance users and roles "
                                         "in the mount (on this machine, in HOME's store)")
    entries = p.add_subparsers(dest="action", required=True)
    e = entries.add_parser("user", help="the Unix user NAME is the appliance user --as")
    e.add_argument("unix_name", metavar="NAME")
    e.add_argument("--as", dest="as_user", required=True, metavar="USER")
    e = entries.add_parser("group", help="members of the Unix group NAME have --role in --project")
    e.add_argument("unix_name", metavar="NAME")
    e.add_argument("--role", required=True, choices=["admin", "operator", "viewer"])
    e.add_argument("--project", required=True)
    entries.add_parser("list", help="the entries, and whether this machine knows each name")
    e = entries.add_parser("rm", help="remove an entry")
    e.add_argument("kind", choices=["user", "group"])
    e.add_argument("unix_name", metavar="NAME")


def _add_create(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("create", help="create a VM (started unless --stopped)")
    p.add_argument("name")
    p.add_argument("--template", help="start from this template (vmctl template list); "
                                      "the options given here win; without: default")
    p.add_argument("--image", help=f"an image's name (default {DEFAULT_IMAGE})")
    p.add_argument("--cpus", type=int, help=f"vCPUs (default {DEFAULT_CPUS})")
    p.add_argument("--memory", type=size,
                   help=f"MiB, or 512M / 2G (default {DEFAULT_MEMORY_MIB})")
    p.add_argument("--disk", action="append", type=new_disk, metavar="NAME:SIZE",
                   help="an extra blank disk, e.g. data:10G (repeat for several)")
    p.add_argument("--network", type=network,
                   help=f"none | user | network:NAME (default {DEFAULT_NETWORK_TYPE})")
    p.add_argument("--ip", type=ipv4,
                   help="fixed IPv4 on a libvirt network (with --network network:NAME)")
    p.add_argument("--forward", action="append", type=port_forward,
                   metavar="HOSTPORT:GUESTPORT[/udp]",
                   help="a port of 127.0.0.1 forwarded to the guest (user networking; repeat)")
    p.add_argument("--user-data", dest="user_data", type=text_file, metavar="FILE",
                   help="cloud-init user-data")
    p.add_argument("--meta-data", dest="meta_data", type=text_file, metavar="FILE",
                   help="cloud-init meta-data")
    p.add_argument("--network-config", dest="network_config", type=text_file, metavar="FILE",
                   help="cloud-init network-config")
    p.add_argument("--run-strategy", dest="run_strategy", choices=list(RUN_STRATEGIES),
                   help=f"when the appliance starts it again (default {DEFAULT_RUN_STRATEGY})")
    p.add_argument("--label", action="append", type=pair, help="KEY=VALUE")
    p.add_argument("--host", help="place it on this host (the scheduler still checks it fits)")
    p.add_argument("--group", help="a server group (vmctl group create)")
    p.add_argument("--node-selector", dest="node_selector", action="append", type=pair,
                   metavar="KEY=VALUE",
                   help="only on hosts with this label (repeat for several)")
    # issue 14, part F: the CPU model, topology, dedicated CPUs, hugepages
    p.add_argument("--cpu-mode", dest="cpu_mode", choices=list(CPU_MODES),
                   help="cluster (default: the hosts' baseline, migrates anywhere) | host-model | "
                        "host-passthrough (needs --node-selector appliance/host=NAME)")
    p.add_argument("--topology", type=topology, metavar="SxCxT",
                   help="sockets x cores x threads, e.g. 1x2x1 (product = the VM's vCPUs)")
    p.add_argument("--dedicated", action="store_true",
                   help="pin each vCPU to a dedicated host CPU (the host's cpu_dedicated_set)")
    p.add_argument("--hugepages", action="store_true", help="back the memory with hugepages")
    p.add_argument("--firmware", choices=["bios", "uefi", "uefi-secure"],
                   help="bios (default), uefi (OVMF) or uefi-secure (Secure Boot; q35)")
    p.add_argument("--machine", choices=["q35", "pc"], help="q35 (default) or pc (i440FX)")
    p.add_argument("--tpm", action="store_true", default=None, help="a virtual TPM 2.0 (swtpm)")
    add_rule_options(p)  # --allow, --allow-out (issue 15: appliance/cli/firewall.py)
    p.add_argument("--stopped", action="store_true")
    _no_wait(p)


def topology(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(part.isdigit() and 0 < len(part) < 5 for part in parts):
        raise argparse.ArgumentTypeError("must be SOCKETSxCORESxTHREADS, e.g. 1x2x1")
    sockets, cores, threads = (int(part) for part in parts)
    return sockets, cores, threads


def _add_vm_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list VMs")
    p.add_argument("--all-projects", dest="all_projects", action="store_true",
                   help="every project's VMs (admins), with a PROJECT column")
    p.add_argument("--state")
    p.add_argument("--label", help="KEY or KEY=VALUE")
    p.add_argument("--host")
    p = sub.add_parser("get", help="show one VM")
    p.add_argument("name")
    _add_create(sub)
    for verb, helptext in STATE_COMMAND_HELP:
        p = sub.add_parser(verb, help=helptext)
        p.add_argument("name")
        _no_wait(p)
    p = sub.add_parser("set", help="change a VM's vCPUs or memory (live on a running VM, "
                       "up to its maximums; beyond them at its next restart)")
    p.add_argument("name")
    p.add_argument("--cpus", type=int, help="vCPUs")
    p.add_argument("--memory", type=size, help="MiB, or 512M / 2G")
    p.add_argument("--max-cpus", dest="max_cpus", type=int,
                   help="the most vCPUs it can have while running (applies at its next start)")
    p.add_argument("--max-memory", dest="max_memory", type=size,
                   help="the most memory it can have while running (applies at its next start)")
    p = sub.add_parser("rebuild", help="make the root disk again from its image (or --image), "
                       "keeping name, MAC, addresses and data disks; cloud-init runs again")
    p.add_argument("name")
    p.add_argument("--image", default=None, help="another image (the spec's changes to it)")
    _no_wait(p)
    p = sub.add_parser("rename", help="rename a stopped VM")
    p.add_argument("name")
    p.add_argument("new_name")
    p = sub.add_parser("delete", help="delete a VM and its disks")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="even while it runs")
    _no_wait(p)
    _add_console_commands(sub)
    p = sub.add_parser("cancel", help="cancel an operation: a pending one, or a running "
                                      "migration, backup, restore or clone")
    p.add_argument("op_id", metavar="OP_ID")
    p = sub.add_parser("events", help="the event log (who did what: the audit trail)")
    p.add_argument("name", nargs="?")
    p.add_argument("--user", help="only what this user did (their requests and their effects)")
    p.add_argument("--all-projects", dest="all_projects", action="store_true",
                   help="every project's events (admins)")
    p.add_argument("-f", "--follow", action="store_true")
    p = sub.add_parser("lock", help="lock a VM: only you and admins may change it until unlocked")
    p.add_argument("name")
    p.add_argument("--reason", default="locked", help="why (shown in every refusal)")
    p = sub.add_parser("unlock", help="unlock a VM (yours, or any as an admin)")
    p.add_argument("name")
    p = sub.add_parser("images", help="list, import, upload or delete images")
    p.add_argument("action", nargs="?", choices=["list", "import", "upload", "delete"],
                   default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("path", nargs="?")
    p = sub.add_parser("migrate",
                       help="move a VM to another host: live when it runs, offline when stopped")
    p.add_argument("name")
    p.add_argument("host")
    p.add_argument("--force", action="store_true",
                   help="skip the scheduler's filters (labels, capacity, groups)")
    _no_wait(p)


def _add_console_commands(sub: argparse._SubParsersAction) -> None:
    """console, vnc, screenshot (appliance/cli/consoles.py)."""
    p = sub.add_parser("console", help="attach to the serial console (Ctrl-] detaches), "
                                       "or print its log with --log")
    p.add_argument("name")
    p.add_argument("--read-only", dest="read_only", action="store_true",
                   help="watch only, even when your role may type")
    p.add_argument("--force", action="store_true",
                   help="take the console over from a client outside the appliance "
                        "(e.g. virsh console on the host)")
    p.add_argument("--history", type=count, default=0, metavar="BYTES",
                   help="first print the log's last BYTES bytes (at most 65536)")
    p.add_argument("--log", action="store_true", help="print the console's log and exit")
    p.add_argument("-f", "--follow", action="store_true", help="print the log as it grows")
    p = sub.add_parser("vnc", help="print a URL of the VNC console in the browser "
                                   "(a ticket valid once, for 60 s)")
    p.add_argument("name")
    p = sub.add_parser("screenshot", help="save the VM's screen as a PNG file")
    p.add_argument("name")
    p.add_argument("file", help="where to write it (- for stdout)")


def _add_host_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("host", help="list, show, add, change the state of, or remove libvirt hosts")
    hosts = p.add_subparsers(dest="action", required=True)
    hosts.add_parser("list", help="hosts with their state and what is allocated")
    hosts.add_parser("show", help="one host").add_argument("name")
    h = hosts.add_parser("add", help="add a libvirt host")
    h.add_argument("name")
    h.add_argument("uri", help="qemu:///system, qemu+ssh://root@h2/system, qemu+unix:///system?socket=PATH")
    h.add_argument("--label", action="append", type=pair, metavar="KEY=VALUE")
    h.add_argument("--storage",
                   help="hosts naming the same storage share VM disks (default: shared)")
    h.add_argument("--cpu-ratio", dest="cpu_ratio", type=ratio, metavar="X",
                   help=f"vCPU overcommit (default {DEFAULT_CPU_RATIO:g})")
    h.add_argument("--ram-ratio", dest="ram_ratio", type=ratio, metavar="X",
                   help=f"RAM overcommit (default {DEFAULT_RAM_RATIO:g})")
    h.add_argument("--disk-ratio", dest="disk_ratio", type=ratio, metavar="X",
                   help=f"disk overcommit (default {DEFAULT_DISK_RATIO:g})")
    h.add_argument("--migration-address", dest="migration_address", metavar="ADDRESS",
                   help="where other hosts reach this one for live migration")
    h = hosts.add_parser("state", help="enabled | disabled (no new VMs) | maintenance (and move "
                                       "its VMs away; exit status 1 when some cannot leave)")
    h.add_argument("name")
    h.add_argument("state", choices=list(HOST_STATES))
    hosts.add_parser("remove", help="remove a host that has no VMs").add_argument("name")
    add_host_set(hosts)  # appliance/cli/hosts.py
    add_host_access_commands(hosts)  # ssh-key, trust (appliance/cli/host_access.py)

    p = sub.add_parser("group", help="server groups: keep VMs together or apart")
    groups = p.add_subparsers(dest="action")
    groups.add_parser("list", help="groups and their members")
    g = groups.add_parser("create", help="create a group")
    g.add_argument("name")
    g.add_argument("policy", choices=list(GROUP_POLICIES))
    groups.add_parser("delete", help="delete a group without members").add_argument("name")


def _add_access_commands(sub: argparse._SubParsersAction) -> None:
    """user, token, whoami (appliance/cli/access.py)."""
    p = sub.add_parser("user", help="list, add, change or remove users (admin)")
    users = p.add_subparsers(dest="action", required=True)
    users.add_parser("list", help="users, their roles and projects")
    users.add_parser("show", help="one user").add_argument("name")
    add = users.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default=None, help="(default viewer)")
    add.add_argument("--project", action="append", metavar="PROJECT",
                     help="a project they work in (repeat; the first is their default; "
                          "default: default)")
    change = users.add_parser("set", help="change a user's role, projects, or disable them")
    change.add_argument("name")
    change.add_argument("--role", choices=ROLES, default=None)
    change.add_argument("--project", action="append", metavar="PROJECT",
                        help="the projects they work in, replacing theirs (repeat)")
    state = change.add_mutually_exclusive_group()
    state.add_argument("--disable", dest="disabled", action="store_true", default=None,
                       help="their tokens stop working")
    state.add_argument("--enable", dest="disabled", action="store_false")
    users.add_parser("rm", help="remove a user and their tokens").add_argument("name")

    p = sub.add_parser("token", help="create, list or revoke API tokens")
    tokens = p.add_subparsers(dest="action", required=True)
    t = tokens.add_parser("create", help="make a token (printed once)")
    t.add_argument("user", nargs="?", default=None, help="whose (default: yours; others: admin)")
    t.add_argument("--expires", default=None, metavar="DURATION",
                   help="90m, 12h, 30d (default: never)")
    t.add_argument("--description", default=None)
    t = tokens.add_parser("list", help="tokens by id and prefix (yours; an admin: everyone's)")
    t.add_argument("--user", default=None)
    tokens.add_parser("revoke", help="revoke a token").add_argument("id")
    sub.add_parser("whoami", help="the user, role and projects of the token in use")


def build_parser(nested_globals: bool = True) -> argparse.ArgumentParser:
    """vmctl's parser; nested_globals: the global options under every subcommand too
    (not in the man page, which says them once: appliance/cli/docs.py)."""
    parser = Parser(prog="vmctl", description="Drive the vm-appliance.",
                    formatter_class=DefaultsFormatter)
    parser.add_argument("--version", action="version", version=f"vmctl {version()}")
    add_global_options(parser)  # appliance/cli/target.py: also after the subcommand
    # Its own dest: `vmctl user add NAME --project P` names the user's projects.
    parser.add_argument("--project", dest="acting_project", metavar="P",
                        default=os.environ.get("VMCTL_PROJECT"),
                        help="act in project P (default: the token's first project; "
                             "env VMCTL_PROJECT)")
    parser.add_argument("--fingerprint", default=os.environ.get("VMCTL_FINGERPRINT"),
                        help="trust the appliance's HTTPS certificate with this SHA-256 "
                             "fingerprint (`vmctl tls fingerprint`; env VMCTL_FINGERPRINT)")
    parser.add_argument("--ca-file", dest="ca_file", default=os.environ.get("VMCTL_CA_FILE"),
                        help="trust HTTPS certificates signed by this CA file (or the "
                             "self-signed HOME/tls/server.crt itself; env VMCTL_CA_FILE)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_local_commands(sub)
    _add_vm_commands(sub)
    _add_host_commands(sub)
    _add_access_commands(sub)
    add_key_commands(sub)  # vmctl key (issue 15)
    add_project_commands(sub)
    add_backup_commands(sub)
    add_template_commands(sub)
    add_pool_commands(sub)
    add_network_commands(sub)  # appliance/cli/networks.py (issue 15)
    add_firewall_command(sub)  # appliance/cli/firewall.py (issue 15)
    add_disk_commands(sub)  # disk, cdrom (appliance/cli/disks.py)
    add_remote_commands(sub)  # appliance/cli/remotes.py
    add_completion_command(sub)  # appliance/cli/docs.py
    add_admin_commands(sub)  # admin backup | restore (appliance/cli/admin.py)
    add_move_commands(sub)  # adopt, export (appliance/cli/moves.py, issue 16)
    sub.add_parser("doctor", help="check libvirt, KVM, FUSE, disk space and the API")
    for child in subcommand_parsers(parser):
        if nested_globals:
            add_global_options(child, nested=True)
        child.formatter_class = DefaultsFormatter
    return parser
