#!/usr/bin/env python3
"""Thin caller of ``sslam_plugin.cli.plot_mixture`` (installed as a console command; see README)."""

import sys

from sslam_plugin.cli.plot_mixture import main

if __name__ == "__main__":
    sys.exit(main())
