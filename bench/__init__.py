"""TenantGate benchmark harness (issue #7): ``python -m bench [--quick] [--only NAME...] [--out DIR]``.

Not part of the installed package and never imported by ``src/``. Every scenario loads only loopback,
bounds its loops in count and time, and reports medians/percentiles from one run together with a floor
measured in the same run, so ratios stay meaningful on a shared, noisy machine.
"""
