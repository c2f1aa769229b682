"""One exception family whose messages a GIS analyst can act on.

The CLI and the plugin print ``str(error)`` (never a traceback) and exit with ``error.exit_code``.
"""


class SwclipError(Exception):
    """Base class of every error this toolkit raises on purpose."""

    exit_code = 1


class InputError(SwclipError):
    """The input data cannot be used as given (missing file, column, CRS, no usable records...)."""

    exit_code = 2


class ModelError(SwclipError):
    """A backbone, checkpoint or weight file cannot be found or loaded."""

    exit_code = 3


class DiskFullError(SwclipError):
    """A write failed because its disk is full; what was being written was removed."""

    exit_code = 5

    def __init__(self, path: object) -> None:
        super().__init__(
            f"No space left on device while writing {path}; free space and run again (nothing "
            "was changed)"
        )


class CancelledError(SwclipError):
    """The caller asked to stop; nothing partial was written."""

    exit_code = 130
