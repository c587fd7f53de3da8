"""The `crossvit` sub-commands, one module each, named after the command, with `add_parser` and `run`."""
