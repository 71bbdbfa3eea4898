"""``python -m producers.postgres --config FILE``: run the outbox relay as a plain process.

The same as ``sfsync run postgres-producer``; tests and kill drills use it to
run a relay they can SIGKILL. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from producers.postgres.relay import RelaySettings, run
from sfsync.config import load_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m producers.postgres", description=__doc__)
    parser.add_argument("--config", default=None, help="config file (default ./sfsync.yaml, env SFSYNC_CONFIG)")
    parser.add_argument("--batch-size", type=int, default=None, help="outbox rows per batch")
    parser.add_argument("--poll-interval", type=float, default=None, help="seconds between polls")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s relay %(levelname)s %(message)s")
    cfg = load_config(args.config)
    settings = RelaySettings.from_config(cfg)
    if args.batch_size is not None:
        settings = replace(settings, batch_size=args.batch_size)
    if args.poll_interval is not None:
        settings = replace(settings, poll_interval_s=args.poll_interval)
    run(cfg, None, settings)


if __name__ == "__main__":
    main()
