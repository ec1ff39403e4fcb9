"""Small argument checks shared by the public functions: a clear error that names the argument.

Each check returns the value in its plain Python form (numpy scalars become ``int``/``float``)
or raises a ``ValueError``/``TypeError`` that says which argument, what was given, what is
expected and how to fix it.  NaN and infinity never pass a numeric check.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def integer(name: str, value, minimum: int | None = None) -> int:
    """``value`` as an int (numpy integers welcome; bools, floats and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        hint = f" (did you mean {int(value)}?)" if isinstance(value, float) and value.is_integer() else ""
        raise TypeError(f"{name} must be an integer, got {_shown(value)} of type {type(value).__name__}{hint}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def number(name: str, value, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None) -> float:
    """``value`` as a finite float within the bounds (``above``: strictly greater than)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {_shown(value)} of type {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if above is not None and not value > above:
        raise ValueError(f"{name} must be > {above}, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def probability(name: str, value) -> float:
    return number(name, value, minimum=0.0, maximum=1.0)


def text_list(name: str, value, allow_empty: bool = False) -> list[str]:
    """A list of strings; a lone string is refused (it would be read one character at a time)."""
    if isinstance(value, str | bytes):
        raise TypeError(f"{name} must be a list of strings, got the single string {_shown(value)}; "
                        f"wrap it in a list: [{_shown(value)}]")
    if not isinstance(value, Sequence | set | frozenset) and not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a list of strings, got {type(value).__name__}")
    items = list(value)
    bad = [i for i, x in enumerate(items) if not isinstance(x, str)]
    if bad:
        raise TypeError(f"{name} must hold strings only; item {bad[0]} is {_shown(items[bad[0]])} "
                        f"of type {type(items[bad[0]]).__name__}")
    if not items and not allow_empty:
        raise ValueError(f"{name} is empty: pass at least one string")
    return items


def chat_messages(name: str, value) -> list[dict]:
    """A conversation: a non-empty list of ``{"role": ..., "content": str}`` dicts."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise TypeError(f"{name} must be a non-empty list of messages like [{{'role': 'user', 'content': '...'}}], "
                        f"got {_shown(value)}")
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"{name}[{i}] must be a dict with 'role' and 'content', got {_shown(m)}")
        if not isinstance(m["content"], str):
            raise TypeError(f"{name}[{i}]['content'] must be a string, got {type(m['content']).__name__}")
    return list(value)


def prompt_list(name: str, value) -> list:
    """Prompts: a list whose items are strings or conversations; a lone string or conversation is refused."""
    if isinstance(value, str):
        raise TypeError(f"{name} must be a list of prompts, got the single string {_shown(value)}; "
                        f"wrap it in a list: [{_shown(value)}]")
    if isinstance(value, Sequence) and value and isinstance(value[0], Mapping):
        raise TypeError(f"{name} must be a list of prompts; got one conversation (a list of messages): "
                        "wrap it in a list, [messages]")
    items = list(value)
    if not items:
        raise ValueError(f"{name} is empty: pass at least one prompt (a string or a list of chat messages)")
    for i, p in enumerate(items):
        if not isinstance(p, str):
            chat_messages(f"{name}[{i}]", p)
    return items


def scores(name: str, values, n: int) -> list[float]:
    """What a reward function returned: ``n`` finite numbers, one per text."""
    if isinstance(values, numbers.Real) or (hasattr(values, "ndim") and getattr(values, "ndim", 1) == 0):
        raise TypeError(f"{name} returned a single number ({_shown(values)}); it must return one score per text, "
                        f"a list of {n}")
    if isinstance(values, str) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must return a list of {n} numbers, got {type(values).__name__}")
    out = list(values)
    if len(out) != n:
        raise ValueError(f"{name} returned {len(out)} scores for {n} texts; return exactly one score per text")
    try:
        out = [float(x) for x in out]
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must return numbers; could not read {_shown(values)} as floats ({e})") from e
    bad = [i for i, x in enumerate(out) if not math.isfinite(x)]
    if bad:
        raise ValueError(f"{name} returned a non-finite score ({out[bad[0]]}) for text {bad[0]}; "
                         "return finite numbers (replace NaN, e.g. by 0.0)")
    return out


def flag(name: str, value) -> bool:
    """``value`` as a bool (numpy bools welcome); a string such as ``"false"`` is refused, not read as True."""
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {_shown(value)} of type {type(value).__name__}"
                    + (f" (did you mean {value.strip().lower() in ('true', '1', 'yes')}?)"
                       if isinstance(value, str) else ""))


def one_of(name: str, value, choices: Sequence) -> object:
    """``value`` if it is one of ``choices``, else a ValueError that lists them."""
    if isinstance(value, str) and value in choices:
        return value
    close = [c for c in choices if isinstance(value, str) and isinstance(c, str) and c.lower() == value.lower()]
    raise ValueError(f"{name}={_shown(value)} is not one of {list(choices)}"
                     + (f"; did you mean {close[0]!r}?" if close else ""))


def records(name: str, value, allow_empty: bool = False) -> list[Mapping]:
    """A list of dicts (rankings, rows); a lone dict or string is refused (it would be read key by key)."""
    if isinstance(value, Mapping):
        raise TypeError(f"{name} must be a list of dicts, got a single dict (keys {sorted(value)[:6]}); "
                        f"wrap it in a list: [{name[:-1] if name.endswith('s') else name}]")
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a list of dicts, got {_shown(value)} of type {type(value).__name__}")
    items = list(value)
    bad = [i for i, x in enumerate(items) if not isinstance(x, Mapping)]
    if bad:
        raise TypeError(f"{name}[{bad[0]}] must be a dict, got {_shown(items[bad[0]])} of type "
                        f"{type(items[bad[0]]).__name__}")
    if not items and not allow_empty:
        raise ValueError(f"{name} is empty: pass at least one")
    return items
