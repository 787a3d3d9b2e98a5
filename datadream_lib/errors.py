"""The one error type a user sees when the run stops on bad input.

Every message names the problem and the fix. The pipeline prints it without a traceback and
exits non-zero; notebooks show it as the cell's error.
"""


class DataDreamError(Exception):
    """Bad input or an unreachable resource, found before expensive work starts."""
