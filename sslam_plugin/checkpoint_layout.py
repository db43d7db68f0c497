"""Moved to :mod:`sslam_plugin.checkpoints.official_names`; this name stays for one release."""

from .checkpoints.official_names import *  # noqa: F401,F403
from .checkpoints.official_names import __all__  # noqa: F401
