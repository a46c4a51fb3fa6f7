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


# What a failed allocation says when it is not one of the types below: PyTorch's CPU
# allocator raises a plain RuntimeError ("DefaultCPUAllocator: can't allocate memory"
# / "not enough memory"), other backends "... out of memory".
_OUT_OF_MEMORY_TEXTS = ("can't allocate memory", "not enough memory", "out of memory")
SIZE_KEYS = "DATA.BATCH_SIZE, DATA.MU_U, input_size, vpt_len"  # what sets the memory a step needs


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed: ``MemoryError``, torch's
    ``OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` is the same class), or the
    CPU allocator's RuntimeError. Decided from the type's name and module, so that
    ``main.py`` asks without importing torch."""
    if isinstance(exc, MemoryError):
        return True
    if any(cls.__name__ == "OutOfMemoryError" and cls.__module__.split(".")[0] == "torch"
           for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and any(
        text in str(exc).lower() for text in _OUT_OF_MEMORY_TEXTS)


def out_of_memory_message(exc: BaseException) -> str:
    """The one line for a run that ran out of memory: what failed, shortened (a CUDA
    message is a paragraph), and the keys that size a step."""
    return (f"out of memory ({brief(exc, 160)}): lower {SIZE_KEYS}, or set "
            f"grad_checkpointing True (docs/speed.md)")
