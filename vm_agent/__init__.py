"""vm-agent: the daemon inside every Vers VM."""

__version__ = "0.1.0"
