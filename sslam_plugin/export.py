"""Moved to :mod:`sslam_plugin.checkpoints`; this name stays for one release."""

from .checkpoints import *  # noqa: F401,F403
from .checkpoints import __all__  # noqa: F401
