"""``python -m sfsync.emulator --port P --state-dir DIR [--schema FILE] [--host H]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sfsync.emulator import serve


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sfsync.emulator", description="Local Salesforce emulator")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0 = any free port)")
    parser.add_argument("--state-dir", type=Path, required=True, help="directory for ca.pem and the server cert")
    parser.add_argument("--schema", type=Path, default=None, help="YAML file with extra objects/fields")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    args = parser.parse_args(argv)
    serve(args.port, args.state_dir, args.schema, args.host)


if __name__ == "__main__":
    main()
