"""Numbers from the run, in the prose: MyST-NB's ``glue`` where the book is built, a no-op elsewhere.

A chapter computes a number in a code cell and calls ``glue("sft_success", 0.563)``; its prose
writes ``{glue:text}`sft_success:.1%```, and the rendered book shows the number *this* run
produced.  In Jupyter or Colab (no ``myst_nb`` installed) the call only returns the value, so the
same notebook runs everywhere; the cell's printed output shows the number to the reader.
"""

from __future__ import annotations

import numbers


def glue(name: str, value, display: bool = False):
    """Record ``value`` under ``name`` for the book's ``{glue:text}`` roles; returns ``value``.

    numpy and torch scalars are stored as plain Python numbers, so a format spec such as ``:.1%``
    or ``:.2f`` works on them in the prose.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"glue name must be a Python identifier (letters, digits, _), got {name!r}")
    stored = value
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalar
        stored = value.item()
    if isinstance(stored, numbers.Integral) and not isinstance(stored, bool):
        stored = int(stored)
    elif isinstance(stored, numbers.Real) and not isinstance(stored, bool):
        stored = float(stored)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # Colab or a plain Jupyter: nothing to render into
        return value
    myst_glue(name, stored, display=display)
    return value
