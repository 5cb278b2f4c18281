"""rl: rootless, daemonless OCI containers."""

__version__ = "0.1.0"
