"""One exception type for bad user input, so entry points can print one clear line and exit non-zero."""


class SGPError(ValueError):
    """Bad user input: a config value, a dataset, a checkpoint. The message says what to change."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise SGPError(message)
