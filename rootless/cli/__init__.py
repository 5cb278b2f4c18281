"""The `rl` command line: one module per family of commands, each with a `register()`."""
