"""TenantGate: a policy decision point that enforces tenant isolation on every decision."""

__version__ = "0.1.0"
