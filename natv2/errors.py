"""The one exception type that means "the user gave bad input".

The CLI turns it into a single line on stderr and exit code 2; everything else is a bug and
keeps its traceback (shown with ``--debug``).
"""

from __future__ import annotations


class Natv2Error(Exception):
    """Bad input: the message names the problem and how to fix it."""


class EncodingError(Natv2Error, ValueError):
    """An encoding vector that is malformed (length, range, unknown encoding)."""
