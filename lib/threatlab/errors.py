"""The project's exceptions: each says what was wrong and what is allowed."""


class ConfigError(ValueError):
    """A parameter has a value the code cannot use; raised before any compute."""


class DataUnavailableError(RuntimeError):
    """A data set is not on this machine; the message names the command that provides it."""


class QueryBudgetExceeded(RuntimeError):
    """A black-box query would take an example (or the whole run) past its budget."""


class IntegrityError(RuntimeError):
    """A file's checksum or content does not match what was recorded for it."""
