"""The one exception type that the library raises for bad input.

The command line turns it into a single `error: ...` line; library users can catch it
without catching every ValueError from deep inside torch.
"""


class CrossViTError(ValueError):
    """Bad input from the user: a file, a name, an option or a tensor that does not fit."""


class CheckpointError(CrossViTError):
    """A checkpoint file that cannot be read or does not fit the model."""
