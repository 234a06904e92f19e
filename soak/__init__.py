"""`make soak`: a bounded, loopback-only soak of a real TenantGate server (see soak/__main__.py)."""
