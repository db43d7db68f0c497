"""Command-line tools, installed as ``sslam-*`` console commands (see ``pyproject.toml``).

Each module has a ``main(argv=None)`` that returns the exit status (or None
for 0); ``scripts/*.py`` are thin callers kept for checkouts.

Every command fails the same way: one ``error: ...`` line on stderr naming the
file or option and what to do, and exit status 1 for a file problem (an input
missing, unreadable or malformed, a bad checkpoint, an output in the way
without --force) or 2 for a usage error (a command line argparse refuses,
option values out of range or contradicting each other), as argparse does.
"""

from __future__ import annotations

import sys

FILE_PROBLEM = 1
USAGE = 2


class UsageError(ValueError):
    """Option values that are out of range or do not fit together (exit status 2)."""


def fail(error: object, status: int = 0) -> int:
    """Print ``error: <error>`` as one line on stderr; returns ``status``, by default
    :data:`USAGE` for a :class:`UsageError` and :data:`FILE_PROBLEM` for anything else."""
    print("error: " + " ".join(str(error).split("\n")), file=sys.stderr)
    return status or (USAGE if isinstance(error, UsageError) else FILE_PROBLEM)
