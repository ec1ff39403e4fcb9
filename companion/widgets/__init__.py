"""Interactive widgets. Each works live in Jupyter/Colab and in the static book.

Widgets live one per module (``temperature``, ``ranking``, ``bandit``, ...); their logic is a
tested pure function elsewhere in ``companion`` and their browser side is plain JavaScript
with precomputed data (see :mod:`companion.widgets.html`).
"""
