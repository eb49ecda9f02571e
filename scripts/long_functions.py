#!/usr/bin/env python3
"""Fails when a function in a crate's src/ is longer than 80 lines.

A function may be longer only when the comment just above it says why it cannot be split,
in a line starting `// Long:`. Test code (from the first `#[cfg(test)]`, files named
`*tests.rs`) is left out.

Usage: scripts/long_functions.py [crates-dir]
"""
import os
import re
import sys

LIMIT = 80
ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "crates")
FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)")


def strip(line):
    """The line without string literals, char literals and a trailing comment, for counting braces."""
    line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(?:\\.|[^'\\])'", "''", line)
    return line.split("//")[0]


def functions(path):
    lines = open(path, encoding="utf-8").read().split("#[cfg(test)]")[0].splitlines()
    i = 0
    while i < len(lines):
        m = FN.match(lines[i])
        if not m:
            i += 1
            continue
        depth, start, opened = 0, i, False
        j = i
        while j < len(lines):
            code = strip(lines[j])
            if not opened and ";" in code and "{" not in code:
                break  # a declaration without a body
            depth += code.count("{") - code.count("}")
            opened = opened or "{" in code
            if opened and depth <= 0:
                break
            j += 1
        length = j - start + 1
        k = start - 1
        while k >= 0 and lines[k].lstrip().startswith(("//", "#[")):
            k -= 1
        excused = any(l.lstrip().startswith("// Long:") for l in lines[k + 1:start])
        yield m.group(1), start + 1, length, excused
        i = start + 1


def main():
    bad = []
    longest = (0, "")
    for crate in sorted(os.listdir(ROOT)):
        src = os.path.join(ROOT, crate, "src")
        for dirpath, _, files in os.walk(src):
            for f in sorted(files):
                if not f.endswith(".rs") or f.endswith("tests.rs"):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)
                for name, line, length, excused in functions(path):
                    if not excused and length > longest[0]:
                        longest = (length, f"{rel}:{line} {name}")
                    if length > LIMIT and not excused:
                        bad.append(f"{rel}:{line}: `{name}` is {length} lines")
    for b in bad:
        print(b)
    if bad:
        print(f"{len(bad)} functions over {LIMIT} lines: split them, or say why not in a `// Long:` comment above")
        sys.exit(1)
    print(f"no function over {LIMIT} lines; the longest is {longest[0]} ({longest[1]})")


main()
