"""One error type for everything a user can get wrong.

Every message says *what* is wrong, *where* (file, key, column, row) and *how to
fix it*; the CLI prints it as one paragraph and exits non-zero, with no traceback
unless ``--debug`` is given.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class DistclustError(Exception):
    """A problem the user can fix; ``str()`` is the whole message."""

    exit_code = 2

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        parts = [what if what.endswith(("?", "!")) else what.rstrip(".") + "."]
        if where:
            parts.append(f"Where: {where}.")
        if fix:
            parts.append(f"Fix: {fix.rstrip('.')}.")
        super().__init__(" ".join(parts))


class DataError(DistclustError):
    """Input data that cannot be used as it is."""


class SpecError(DistclustError):
    """A job / sweep spec (YAML or --set) that is invalid."""


class ArtifactError(DistclustError):
    """A model directory that cannot be loaded or does not fit the data."""


class OutputExistsError(DistclustError):
    """Refusing to overwrite an output that already exists."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' Did you mean X?' hint for misspelt names (empty when nothing is close)."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
