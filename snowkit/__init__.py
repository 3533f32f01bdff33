"""snowkit: load UniFi network inventory into a ServiceNow CMDB without losing data."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("snowkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
