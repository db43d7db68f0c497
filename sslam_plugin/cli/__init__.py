"""Command-line tools, installed as ``sslam-*`` console commands (see ``pyproject.toml``).

Each module has a ``main(argv=None)`` that returns the exit status (or None
for 0); ``scripts/*.py`` are thin callers kept for checkouts.
"""
