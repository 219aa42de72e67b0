"""The ``flowpoint`` command line."""
