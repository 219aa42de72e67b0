"""``python -m flowpoint.cli``: the same as the ``flowpoint`` command."""

from flowpoint.cli._app import main

main()
