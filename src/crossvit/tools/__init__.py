"""Tools built on the model: cost counting, the command line's tables and demos."""
