"""What the library raises for input it cannot use. A command maps TracingInputError to exit code 2."""


class TracingInputError(ValueError):
    """A leak or a checkpoint that cannot be read as one: the message names the file and what is wrong."""
