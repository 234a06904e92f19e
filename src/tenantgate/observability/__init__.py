"""Metrics and logging. Metrics live on an injected registry; labels never carry tenant or subject ids."""
