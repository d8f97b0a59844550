"""List the longest functions in a package, counting code lines (not blank, not comment-only,
not docstring lines). Usage: python scripts/function_lengths.py [mfhpo] [--top N] [--max N]
Exit status 1 when --max is given and a function is longer."""
from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from pathlib import Path


def code_lines(source: str) -> set[int]:
    """Line numbers that hold code: any token but comments, newlines and docstrings."""
    lines: set[int] = set()
    tree = ast.parse(source)
    doc_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                doc_lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in skip:
            continue
        for ln in range(tok.start[0], tok.end[0] + 1):
            if ln not in doc_lines:
                lines.add(ln)
    return lines


def function_lengths(root: Path) -> list[tuple[int, str]]:
    out = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        lines = code_lines(source)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = sum(1 for ln in range(node.lineno, node.end_lineno + 1) if ln in lines)
                out.append((n, f"{path}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="mfhpo")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--max", type=int, default=None)
    a = ap.parse_args()
    lengths = function_lengths(Path(a.root))
    for n, name in lengths[: a.top]:
        print(f"{n:5d}  {name}")
    if a.max is not None:
        over = [x for x in lengths if x[0] > a.max]
        print(f"{len(over)} function(s) longer than {a.max} code lines")
        sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
