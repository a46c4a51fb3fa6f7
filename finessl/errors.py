"""The one exception type that reaches the user as a single line (exit code 2)."""


class UserError(Exception):
    """Bad input from the user: a config key, a file, a value.

    ``main.py`` catches it, prints ``error: <message>`` on stderr and exits with 2,
    so the message must name the key, file or value and say how to fix it.
    """
