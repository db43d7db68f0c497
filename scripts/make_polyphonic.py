#!/usr/bin/env python3
"""Thin caller of ``sslam_plugin.cli.make_polyphonic`` (installed as a console command; see README)."""

import sys

from sslam_plugin.cli.make_polyphonic import main

if __name__ == "__main__":
    sys.exit(main())
