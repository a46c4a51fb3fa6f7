"""The one exception type that reaches the user as a single line (exit code 2)."""


class UserError(Exception):
    """Bad input from the user: a config key, a file, a value.

    ``main.py`` catches it, prints ``error: <message>`` on stderr and exits with 2,
    so the message must name the key, file or value and say how to fix it.
    """


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, whole, for an error message that must stay one line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def brief(exc: BaseException | str, limit: int = 240) -> str:
    """:func:`one_line` of ``exc`` (or a text), shortened past ``limit`` characters at a
    word boundary and marked so (torch's lists of hundreds of state-dict keys), never
    cut inside a word."""
    text = one_line(exc) if isinstance(exc, BaseException) else " ".join(str(exc).split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[:cut if cut > 0 else limit].rstrip(",;:") + " ... (shortened)"
