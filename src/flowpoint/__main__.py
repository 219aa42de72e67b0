"""``python -m flowpoint``: the same as the ``flowpoint`` command."""

from flowpoint.cli.app import main

main()
