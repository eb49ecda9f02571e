#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a loop.

Every `src/` file of every crate under crates/ is a module (`a/mod.rs` and `a.rs` are `a`,
`a/b.rs` is `a::b`). A module uses another when it names a path into it: `crate::x::…`,
`super::…`, `self::…`, or a child module by its bare name (`waiter::Waiter` in the module that
declares `mod waiter`). A parent that uses its child and a child that uses its parent are a
loop like any other: what both need belongs in a third module below them. Test code (from the
first `#[cfg(test)]`, and files named `*tests.rs`) and comments are left out: tests may reach
anywhere. The crate root is left out too: it declares the modules and re-exports what the
crate offers, so every module sits below it.

Usage: scripts/acyclic.py [crates-dir]    exit 1 and every loop printed when one exists
"""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "crates")
PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")
GROUP = re.compile(r"\b(crate|super|self)::\{([^}]*)\}")
MOD = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)


def modules(src):
    """Module path (tuple) → file text, for one crate's src/."""
    out = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs") or f.endswith("tests.rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            text = open(os.path.join(dirpath, f), encoding="utf-8").read()
            code = text.split("#[cfg(test)]")[0]
            # Comments name modules without using them.
            code = "\n".join(l for l in code.splitlines() if not l.lstrip().startswith("//"))
            out[tuple(rel)] = code
    return out


def resolve(known, base, segments):
    """The longest known module that `base` + `segments` leads into."""
    path = list(base)
    for s in segments:
        if s == "super":
            path = path[:-1]
        elif s == "self":
            continue
        else:
            path.append(s)
    while path and tuple(path) not in known:
        path.pop()
    return tuple(path)


def edges(known, me, text):
    found = set()
    refs = []
    for m in GROUP.finditer(text):
        for part in m.group(2).split(","):
            part = part.strip().split(" as ")[0]
            if part:
                refs.append((m.group(1), part.split("::")))
    for m in PATH.finditer(text):
        if m.group(2) != "::{":
            refs.append((m.group(1), m.group(2).strip(":").split("::")))
    for child in MOD.findall(text):
        for m in re.finditer(r"(?<![:\w])" + child + r"::([A-Za-z_]\w*)", text):
            refs.append(("self", [child, m.group(1)]))
    for head, rest in refs:
        base = () if head == "crate" else (me[:-1] if head == "super" else me)
        target = resolve(known, base, rest)
        if target != me and target:
            found.add(target)
    return found


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    failed = False
    for crate in sorted(os.listdir(ROOT)):
        src = os.path.join(ROOT, crate, "src")
        if not os.path.isdir(src):
            continue
        known = modules(src)
        graph = {m: edges(known, m, t) for m, t in known.items()}
        for comp in cycles(graph):
            failed = True
            names = sorted("::".join(m) or "lib" for m in comp)
            print(f"{crate}: modules import each other in a loop: {', '.join(names)}")
            for m in sorted(comp):
                inside = sorted("::".join(t) or "lib" for t in graph[m] if t in comp)
                print(f"    {'::'.join(m) or 'lib'} -> {', '.join(inside)}")
    if failed:
        sys.exit(1)
    print("no import loops in any crate")


main()
