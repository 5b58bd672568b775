"""Exceptions shared by every module.

`InputError` is what bad *user* input raises: the command line prints
``error: <path>: <message>`` on one line and exits with code 2.
"""

from __future__ import annotations

from os import PathLike


class InputError(ValueError):
    """Bad user input: a file that cannot be read or a value that makes no sense.

    Parameters
    ----------
    path
        The file (or parameter name) the problem is about; may be None.
    message
        One sentence saying exactly what is wrong.
    """

    def __init__(self, path: str | PathLike[str] | None, message: str) -> None:
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)

    def __reduce__(self) -> tuple[type[InputError], tuple[str | None, str]]:
        # Survive pickling (process pools, Dask workers) with the same two arguments.
        return (type(self), (self.path, self.message))
