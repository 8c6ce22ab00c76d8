"""The core shows its code: where a notebook states a formula, :func:`show_source` prints the function
that implements it, right under it.

    show_source(losses.LogitAdjustedLoss.forward)
"""
from __future__ import annotations

import ast
import inspect
import textwrap


def source_text(obj, docstring: bool = True) -> str:
    """The source of a function, method or class ``obj`` (dedented), without its docstring if asked."""
    code = textwrap.dedent(inspect.getsource(obj))
    if docstring:
        return code
    node = ast.parse(code).body[0]
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines = code.splitlines()
        code = "\n".join(lines[:first.lineno - 1] + lines[first.end_lineno:]) + "\n"
    return code


def show_source(*objs, docstring: bool = True) -> None:
    """Show the source of each of ``objs`` (functions, methods, classes): highlighted in a notebook,
    as plain text elsewhere; ``docstring=False`` leaves the docstrings out."""
    text = "\n\n".join(source_text(obj, docstring).rstrip() for obj in objs)
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(Markdown(f"```python\n{text}\n```"))
    else:
        print(text)
