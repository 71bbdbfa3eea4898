"""``python -m sfsync`` = the ``sfsync`` command."""

from sfsync.cli import main

main()
