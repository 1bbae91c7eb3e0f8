"""pktbench: find a network path's packets-per-second knee and throughput ceiling."""
from pktbench._version import __version__

__all__ = ["__version__"]
