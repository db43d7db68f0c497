#!/usr/bin/env python3
"""Thin caller of ``sslam_plugin.cli.plot_training`` (installed as a console command; see README)."""

import sys

from sslam_plugin.cli.plot_training import main

if __name__ == "__main__":
    sys.exit(main())
