"""`vmctl serve`: the controller and the gunicorn-served API as one supervised unit.

The controller runs in this process (it owns the libvirt connection); the API
runs in a gunicorn child that dies with us (PR_SET_PDEATHSIG), so even a
SIGKILL leaves no orphan. Running VMs belong to libvirt and keep running; the
next start adopts them. The children (API, console broker, mount) are forked
before the controller starts, so that they share this process's memory
(appliance/forked.py); a child restarted later is exec'd.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import libvirt

from appliance import accel, memtrim, sdnotify, tls
from appliance.config import Config
from appliance.controller import Controller
from appliance.errors import ApplianceError, NotFound
from appliance.forked import ForkedChild, limit_malloc_arenas
from appliance.forked import fork_child as forked_child
from appliance.image_store import remove_stale_uploads, remove_uploads_of
from appliance.service import Service
from appliance.store import Store
from appliance.store.base import INSTANCE_ID_KEY
from exporter.appliance import publish_reconcile

log = logging.getLogger("vmctl.serve")
PR_SET_PDEATHSIG = 1


# Looked up here, not in the child: _die_with_parent runs between fork and exec
# (preexec_fn) of a serve that may have threads by then, where a dlopen could
# wait forever on the loader's lock held by one of them at the fork.
_PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl


def _die_with_parent() -> None:
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_child(
    args: list[str], env: dict | None = None, log_path: Path | None = None
) -> subprocess.Popen | ForkedChild:
    """Fork the child while this process can (appliance/forked.py: it then
    shares serve's memory), else exec `args`."""
    forked = forked_child(args, env if env is not None else dict(os.environ), log_path,
                          _die_with_parent)
    if forked is not None:
        log.info("forked %s (pid %d)", " ".join(args[1:3]), forked.pid)
        return forked
    out = open(log_path, "ab") if log_path else None
    # args are built by this module (gunicorn, the mount), an argument list without a shell
    return subprocess.Popen(args, env=env, stdout=out,  # noqa: S603
                            stderr=subprocess.STDOUT if out else None,
                            preexec_fn=_die_with_parent, start_new_session=False)


def instance_id(store: Store) -> str:
    value = store.get_meta(INSTANCE_ID_KEY)
    if value is None:
        value = str(uuid.uuid4())
        store.set_meta(INSTANCE_ID_KEY, value)
    return value


def register_demo_image(service: Service, path: str | None) -> None:
    if not path:
        return
    try:
        service.get_image("demo")
    except NotFound:
        # the admin's own path: not the API's import-directory rule
        service.import_image_file("demo", path)
        log.info("registered image demo from %s", path)


API_APP = "appliance.api.app:get_app"


def gunicorn_args(config: Config, wsgi_factory: str = API_APP) -> list[str]:
    """The API server: gunicorn supervises `workers` uvicorn workers; each
    parses HTTP in an event loop (closing connections whose request head
    stalls) and runs the WSGI app in a pool of `threads` threads behind
    admission control (appliance/api/asgi.py), so that slow clients and long
    waits cannot take every thread (issue 9, finding 7). With TLS, gunicorn's
    --certfile/--keyfile reach the uvicorn worker (uvicorn_worker passes
    gunicorn's ssl options to uvicorn), which does the handshake in its loop."""
    cert, key = tls.cert_files(config)
    https = (["--certfile", str(cert), "--keyfile", str(key)]
             if tls.tls_enabled(config) else [])
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", config.listen,
        "--workers", str(config.workers),
        # uvicorn's worker, with a deadline on request heads (http_deadline.py).
        "--worker-class", "appliance.api.http_deadline.Worker",
        # Workers that do not check in for this long are restarted. The event
        # loop checks in whatever the threads do (waits, uploads), so this
        # need not cover the longest wait.
        "--timeout", "60", "--graceful-timeout", "10",
        "--keep-alive", "5",
        # gunicorn >= 25 opens a control socket at ~/.gunicorn/gunicorn.ctl,
        # one path for every appliance on the machine: the first to exit
        # removes the others' (issue 9, 15). Nothing here uses it.
        "--no-control-socket",
        "--access-logfile", str(config.logs_dir / "access.log"),
        # The master imports the app's modules before forking the workers, which
        # share them (appliance/api/gunicorn_conf.py).
        "--config", "python:appliance.api.gunicorn_conf",
        *https,
        f"appliance.api.asgi:get_app({wsgi_factory!r})",
    ]


def wait_for_libvirt(uri: str, seconds: float) -> libvirt.virConnect:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return libvirt.open(uri)
        except libvirt.libvirtError as err:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"vmctl serve: libvirt at {uri} is unreachable: {err.get_error_message()}\n"
                    "start it (packaging/setup-host.sh does) and try again"
                ) from None
            time.sleep(0.5)


def wait_for_port(listen: str, seconds: float) -> None:
    """The API of a previous run that was killed may still be finishing its
    requests (gunicorn's graceful shutdown) on our port: wait for it to go
    rather than start a second API that cannot bind."""
    host, _, port = listen.rpartition(":")
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host.strip("[]"), int(port)))
                return
            except OSError as err:
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"vmctl serve: cannot listen on {listen}: {err.strerror}"
                    ) from None
        time.sleep(0.2)


def prepare_tls(config: Config) -> tuple[Path, Path] | None:
    """The certificate and key to serve with (made at first start when they
    are the self-signed pair), their fingerprint logged; None for plain HTTP.
    A config TLS cannot honour stops serve here, never falls back to HTTP."""
    try:
        files = tls.prepare(config)
    except tls.TLSConfigError as err:
        # Exit status 2, a configuration error, as a bad config.toml key: the units'
        # RestartPreventExitStatus=2 then leaves the service failed, not restarted every 5 s.
        print(f"vmctl serve: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if files is None:
        if not tls.is_loopback(config.listen):
            log.warning("plain HTTP on %s, as chosen (tls: off): the token and everything "
                        "else travel in clear text", config.listen)
        return None
    cert, _ = files
    log.info("TLS certificate %s, SHA-256 fingerprint %s", cert,
             tls.fingerprint(cert.read_bytes()))
    return files


def serve(config: Config, demo_image: str | None = None) -> int:
    config.prepare()
    sdnotify.configure_logging()
    tls_files = prepare_tls(config)  # before saving: a refused config is not kept
    config.save()
    config.token(create=True)
    remove_stale_uploads(config)  # before any API worker can be writing one
    # libvirt prints every error to stderr by default; ours are caught and logged.
    libvirt.registerErrorHandler(lambda *_: None, None)
    store = Store(config.db_path)
    service = Service(store, config)
    try:
        register_demo_image(service, demo_image)
    except ApplianceError as err:
        log.error("could not register the demo image: %s", err.reason)

    conn = wait_for_libvirt(config.libvirt_uri, 30)
    try:
        image = store.get_image("demo")
    except NotFound:
        image = None
    verdict = accel.resolve(store, conn, config.accel, image)
    conn.close()
    log.info("accelerator: %s (%s)", verdict["accel"], verdict["reason"])
    instance = instance_id(store)

    env = {**os.environ, "VMAPP_HOME": str(config.home)}
    # glibc gives each thread its own malloc arena and keeps what a large
    # response freed in it: 8 gthread threads held ~40 MiB more per worker at
    # 1,000 VMs (BENCHMARKS.md). Two arenas per process are plenty under the GIL:
    # the variable for exec'd children, mallopt for this process and forked ones.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env.pop(sdnotify.ENV, None)  # systemd hears from serve alone (NotifyAccess=main)
    limit_malloc_arenas()
    # The children are started while this process has one thread and no open
    # connection, so that they are forked and share its memory (appliance/forked.py);
    # the controller starts right after them.
    store.close()
    wait_for_port(config.listen, 20)
    # From the first child on, a SIGTERM (systemctl stop or restart of a unit still
    # activating) is an orderly stop: serve stops its children below, once the
    # controller has started. Dying of the signal instead, systemd (KillMode=mixed)
    # would SIGKILL them at once, the mount in the middle of unmounting. Forked
    # children reset the handler (appliance/forked.py); exec'd ones lose it.
    stopping = threading.Event()

    def on_signal(signum, _frame) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    api_log = child_log(config, "api.log")
    children = {"api": lambda: spawn_child(gunicorn_args(config), env, api_log)}
    children.update(extra_children(config, env))
    running = {name: start() for name, start in children.items()}
    memtrim.start(stop=stopping)  # after the forks: this process has threads from here on

    controller = Controller(store, config, instance, "kvm" if verdict["accel"] == "kvm" else "qemu")
    controller.adopt_on_start()
    controller.start()
    # The controller's reconcile duration is copied to the store for /metrics to
    # read; the API metrics already go to HOME/run/metrics (exporter/shared_metrics.py,
    # entered by `vmctl serve` before this module was imported), and env has it.
    publish_reconcile(controller, store, stopping)

    log.info("serving on %s://%s (home %s)", "https" if tls_files else "http", config.listen,
             config.home)
    sdnotify.notify_when_ready(config, stopping)  # vm-appliance.service: Type=notify
    restarts: dict[str, float] = {}
    while not stopping.wait(0.5):
        for name, proc in list(running.items()):
            if proc.poll() is not None and not stopping.is_set():
                log.warning("%s exited with %s; restarting", name, proc.returncode)
                remove_uploads_of(config.images_dir, proc.pid)  # the mount's cut `cp` files
                time.sleep(max(0.0, 1.0 - (time.monotonic() - restarts.get(name, 0.0))))
                restarts[name] = time.monotonic()
                running[name] = children[name]()

    log.info("stopping")
    sdnotify.notify("STOPPING=1")
    for proc in running.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in running.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    controller.stop()
    log.info("stopped")
    return 0


def child_log(config: Config, name: str) -> Path | None:
    """Where a child logs: HOME/logs/NAME, or serve's own stderr when that is
    systemd's journal (vm-appliance.service)."""
    return None if sdnotify.stderr_is_journal() else config.logs_dir / name


def extra_children(config: Config, env: dict) -> dict:
    """Further supervised processes: the console broker, the metadata service unless
    --no-metadata, and the mount unless --no-mount.

    The mount child unmounts on SIGTERM (and dies with us, PDEATHSIG); a mount
    left by a crash is cleared here before each (re)start of the child."""
    consoles = [sys.executable, "-m", "appliance.consoles", "--home", str(config.home)]
    children = {"consoles": lambda: spawn_child(consoles, env, child_log(config, "consoles.log"))}
    if config.metadata_service:  # http://169.254.169.254/ for the guests (appliance/metadata/)
        metadata = [sys.executable, "-m", "appliance.metadata", "--home", str(config.home)]
        children["metadata"] = lambda: spawn_child(metadata, env, child_log(config, "metadata.log"))
    point = config.mount_point
    if point is None:
        return children
    from fs.mount import clear_stale

    args = [sys.executable, "-m", "appliance.cli", "--home", str(config.home), "mount", str(point)]
    if config.mount_group:
        args += ["--allow-group", config.mount_group]

    def start_mount() -> subprocess.Popen | ForkedChild:
        clear_stale(point)
        return spawn_child(args, env, child_log(config, "mount.log"))

    children["mount"] = start_mount
    return children
