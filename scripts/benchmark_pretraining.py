#!/usr/bin/env python3
"""Thin caller of ``sslam_plugin.cli.benchmark_pretraining`` (installed as a console command; see README)."""

import sys

from sslam_plugin.cli.benchmark_pretraining import main

if __name__ == "__main__":
    sys.exit(main())
