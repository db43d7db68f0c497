"""Moved to :mod:`sslam_plugin.data.converters`; this name stays for one release."""

from .converters import *  # noqa: F401,F403
from .converters import __all__  # noqa: F401
