"""The one exception type for the user's mistakes (bad options, files, data).

``main.py`` prints these as one line that names the file or option and what to do; every other
exception is a bug and keeps its traceback. The subclasses keep the builtin type a caller may catch.
"""
from __future__ import annotations


class UsageError(Exception):
    """A mistake in the input; the message names the file or option and says what to do."""


class UsageValueError(UsageError, ValueError):
    """A bad option or file content."""


class UsageFileNotFoundError(UsageError, FileNotFoundError):
    """A file or folder the user named (or the config implies) is missing."""


class UsageFileExistsError(UsageError, FileExistsError):
    """An output the run would overwrite already exists."""


def program() -> str:
    """The command the user ran, as messages that say what to run should name it: ``audio-xai`` (the installed
    command) or ``main.py``."""
    import sys
    from pathlib import Path
    return "audio-xai" if Path(sys.argv[0]).name.startswith("audio-xai") else "main.py"
