"""``python -m flowpoint``: the same as the ``flowpoint`` command."""

from flowpoint.cli._app import main

main()
