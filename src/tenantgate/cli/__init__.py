"""The ``tenantgate`` command line."""
