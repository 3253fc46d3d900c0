"""`python -m appliance.consoles --home HOME`: the console broker, until SIGTERM.

`vmctl serve` starts it as its child "consoles" and restarts it if it exits."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

import libvirt

from appliance import memtrim, sdnotify
from appliance.config import Config
from appliance.consoles.broker import Broker
from appliance.consoles.hosts import HostConnections
from appliance.consoles.streams import start_libvirt_events
from appliance.store import Store

log = logging.getLogger("appliance.consoles")


async def run(config: Config) -> None:
    # libvirt's events in a thread of their own, before any connection is opened
    start_libvirt_events()
    broker = Broker(config, HostConnections(Store(config.db_path), config))
    path = config.console_socket
    server = await broker.serve(broker.listen(path))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("console broker listening on %s", path)
    try:
        await stop.wait()
    finally:
        server.close()
        broker.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log.info("console broker stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.consoles")
    parser.add_argument("--home", required=True, help="the appliance's home folder")
    args = parser.parse_args(argv)
    sdnotify.configure_logging()
    # libvirt prints every error to stderr by default; ours are caught and logged.
    libvirt.registerErrorHandler(lambda *_: None, None)
    memtrim.start()  # appliance/memtrim.py
    asyncio.run(run(Config.load(args.home)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
