"""Kept beside pyproject.toml (which holds all metadata) for tools that still look for a setup.py.

It also keeps a build out of the checkout: setuptools writes its build/ and *.egg-info scratch
folders into the source tree (pip builds in-tree), so they go to a temporary folder instead.
"""

import atexit
import shutil
import tempfile

from setuptools import setup

scratch = tempfile.mkdtemp(prefix="sslam-plugin-build-")
atexit.register(shutil.rmtree, scratch, ignore_errors=True)
setup(options={"build": {"build_base": f"{scratch}/build"}, "egg_info": {"egg_base": scratch}})
