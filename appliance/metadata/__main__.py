"""`python -m appliance.metadata --home HOME`: the metadata service, until SIGTERM.

`vmctl serve` starts it as its child "metadata" (config metadata_service) and
restarts it if it exits."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import libvirt

from appliance.config import Config
from appliance.metadata.service import MetadataService
from appliance.store import Store

log = logging.getLogger("appliance.metadata")


async def run(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await MetadataService(config, Store(config.db_path)).run(stop)
    log.info("metadata service stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.metadata")
    parser.add_argument("--home", required=True, help="the appliance's home folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # libvirt prints every error to stderr by default; ours are caught and logged.
    libvirt.registerErrorHandler(lambda *_: None, None)
    asyncio.run(run(Config.load(args.home)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
