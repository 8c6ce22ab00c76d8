"""How many lines of the teaching core one ELM run reads: trace ``make_toy -> MLP -> ELMLoss -> fit
-> predict -> metrics`` and count the code lines of every core function it enters.

A line is counted once, if it is code (not blank, not a comment, not a docstring) and belongs to a
function of ``elm_lite`` outside ``elm_lite/engine`` that the run called (the whole function: what a
student reads to follow the call, not only the lines that ran; those are counted too, as "executed").
Imports and class bodies are not counted. ``--by-function`` lists each function's lines.

    PYTHONPATH=. python tools/count_core_lines.py [--by-function]

docs/design.md quotes its result; ``tests/test_project.py`` runs it.
"""
from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "elm_lite"


def one_elm_run() -> None:
    """The run a student follows: toy data, an MLP, ELM's loss with two views, fit, predict, metrics."""
    from elm_lite import data, losses, metrics, models, train
    toy = data.make_toy(n_classes=4, n_max=40, rho=10, n_test_per_class=20, seed=0)
    train.set_seed(0)
    model = models.MLP(in_dim=2, n_classes=4, hidden=16, embed_dim=4, normalize=True)
    loss = losses.ELMLoss(toy.counts)
    train.fit(model, toy.x_train, toy.y_train, loss, epochs=2, batch_size=32, lr=0.01, seed=0,
              views=2 * [train.gaussian_jitter(0.5)])
    predicted = train.predict(model, toy.x_test)
    metrics.balanced_accuracy(toy.y_test, predicted)
    metrics.shot_accuracy(toy.y_test, predicted, toy.counts)


def is_core(filename: str) -> bool:
    path = Path(filename).resolve()
    return path.is_relative_to(PACKAGE) and not path.is_relative_to(PACKAGE / "engine")


def trace(run) -> tuple[set, set]:
    """``(functions called: {(file, first line)}, lines executed: {(file, line)})`` of the core during ``run()``."""
    from elm_lite import data, losses, metrics, models, train  # noqa: F401  (imports are not the run)
    called, executed = set(), set()

    def local(frame, event, arg):
        if event == "line":
            executed.add((frame.f_code.co_filename, frame.f_lineno))
        return local

    def tracer(frame, event, arg):
        if event == "call" and is_core(frame.f_code.co_filename):
            called.add((frame.f_code.co_filename, frame.f_code.co_firstlineno))
            return local
        return None

    sys.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(None)
    return called, executed


def code_lines(source: str) -> set[int]:
    """Line numbers holding code: a token other than a comment, a newline or a docstring."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    lines = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines - docstrings


def functions(source: str) -> dict[int, tuple[str, int, int]]:
    """``{line the code object starts at: (qualified name, first line, last line)}`` of every function
    (a decorated function's code object starts at its first decorator)."""
    found = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                found[start] = (prefix + child.name, start, child.end_lineno)
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.Lambda):
                found[child.lineno] = found.get(child.lineno, (prefix + "<lambda>", child.lineno, child.end_lineno))
            else:
                visit(child, prefix)
    visit(ast.parse(source), "")
    return found


def count(run=one_elm_run) -> dict:
    """``{"lines", "executed", "functions", "files", "by_function": {name: lines}}`` for ``run``."""
    called, executed = trace(run)
    read, by_function = defaultdict(set), {}
    for filename, first in sorted(called):
        source = Path(filename).read_text()
        where = functions(source).get(first)
        if where is None:          # a module or class body: not counted
            continue
        name, start, end = where
        lines = {n for n in code_lines(source) if start <= n <= end}
        rel = Path(filename).resolve().relative_to(ROOT)
        by_function[f"{rel}:{name}"] = len(lines)
        read[filename] |= lines
    total = sum(len(v) for v in read.values())
    ran = sum(len({n for f, n in executed if f == filename} & lines) for filename, lines in read.items())
    return {"lines": total, "executed": ran, "functions": len(by_function), "files": len(read),
            "by_function": by_function}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--by-function", action="store_true", help="list every function's code lines")
    args = parser.parse_args()
    result = count()
    if args.by_function:
        for name, n in sorted(result["by_function"].items()):
            print(f"{n:4d}  {name}")
    print(f"one ELM run reads {result['lines']} core code lines in {result['functions']} functions of "
          f"{result['files']} files ({result['executed']} of them executed)")


if __name__ == "__main__":
    main()
