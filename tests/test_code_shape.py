"""Readable code: no function in mfhpo/ longer than 80 code lines (scripts/function_lengths.py)."""
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_function_longer_than_80_code_lines():
    lengths = runpy.run_path(str(ROOT / "scripts" / "function_lengths.py"))["function_lengths"](ROOT / "mfhpo")
    assert lengths and lengths[0][0] > 30  # it measured real functions
    over = [f"{name} ({n} lines)" for n, name in lengths if n > 80]
    assert not over, "split these: " + ", ".join(over)
