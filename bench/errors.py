"""The one exception type that means "the user's input is wrong": exit 2, one line, no row."""


class BenchInputError(ValueError):
    """Bad user input (argument, data path, data contents). The CLI prints it on one line, exit 2."""
