#!/usr/bin/env python3
"""Thin caller of ``sslam_plugin.cli.pack`` (installed as the console command sslam-pack; see docs/data.md)."""

import sys

from sslam_plugin.cli.pack import main

if __name__ == "__main__":
    sys.exit(main())
