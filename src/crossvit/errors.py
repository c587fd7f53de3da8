"""The one exception type that the library raises for bad input.

The command line turns it into a single `error: ...` line; library users can catch it
without catching every ValueError from deep inside torch.
"""


class CrossViTError(ValueError):
    """Bad input from the user: a file, a name, an option or a tensor that does not fit."""


def first_line(error: BaseException | str) -> str:
    """An error's first line of text (or its type's name when it has none), for one-line messages."""
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


class CheckpointError(CrossViTError):
    """A checkpoint file that cannot be read or does not fit the model."""
