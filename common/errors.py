"""Errors that the command line turns into one clear line and exit code 2."""


class ActrecError(Exception):
    """Bad usage or bad input: the message names the file and the fix; the CLI exits with 2."""


class CacheError(ActrecError):
    """A cache that cannot be read, written or resumed as asked."""
