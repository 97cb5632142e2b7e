"""Errors that are the user's to fix: the CLI prints them without a traceback."""


class UserError(Exception):
    """A mistake in the user's input (paths, prompts, files); the message says how to fix it."""
