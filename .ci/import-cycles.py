#!/usr/bin/env python3
"""Fails when files of different modules import each other in a cycle.

For each crate, every `.rs` file is a module node (`a/mod.rs` is `a`, `a/b.rs` is `a::b`).
An edge A -> B is a path in A's code (comments and `#[cfg(test)] mod tests` left out) that
names B: `crate::b::...`, `super::...`, `self::...`, or a child `b::...` / `mod b;`. A cycle
(strongly connected component) is allowed only inside one top-level module, where a parent
declares its children and they implement its types; anything spanning two top-level modules
fails the check and is printed with its edges.

Usage: .ci/import-cycles.py [CRATE_SRC_DIR ...]   (default: every crate of the workspace)
"""
import os
import re
import sys
from collections import defaultdict

CRATES = ["agent/src", "controller/src", "controller/cli/src", "shared/src", "shared/engine/src", "shared/service/src"]


def strip(src):
    src = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", src, flags=re.S)
    src = re.sub(r"//[^\n]*", "", src)
    src = re.sub(r'"(?:\\.|[^"\\])*"', '""', src)
    # `use a::{b, c::d}` names `a::b` and `a::c::d` (innermost groups first).
    group = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^{}]*)\}")
    while group.search(src):
        src = group.sub(lambda m: " ".join(f"{m.group(1)}::{item.strip()}" for item in m.group(2).split(",") if item.strip()), src)
    return src


def modules(root):
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)[:-3]
                mod = (rel[: -len("/mod")] if rel.endswith("/mod") else rel).replace("/", "::")
                if mod in ("lib", "main"):
                    mod = "crate"
                elif mod.startswith("bin::"):
                    continue
                with open(path, encoding="utf-8") as f:
                    files[mod] = strip(f.read())
    return files


def resolve(mods, current, path):
    parts = path.split("::")
    if parts[0] == "crate":
        base, parts = [], parts[1:]
    elif parts[0] == "super":
        base = current.split("::")[:-1]
        parts = parts[1:]
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
    elif parts[0] == "self":
        base, parts = current.split("::"), parts[1:]
    else:
        return None
    candidate = base + parts
    while candidate:
        name = "::".join(candidate)
        if name in mods:
            return name
        candidate = candidate[:-1]
    return None


def edges_of(files):
    mods = set(files)
    edges = defaultdict(set)
    for mod, src in files.items():
        for path in re.findall(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)", src):
            target = resolve(mods, mod, path)
            if target and target not in (mod, "crate"):
                edges[mod].add(target)
        prefix = "" if mod == "crate" else mod + "::"
        for child in re.findall(r"\b([a-z_][a-z0-9_]*)::", src) + re.findall(r"\bmod ([a-z_][a-z0-9_]*);", src):
            if prefix + child in mods:
                edges[mod].add(prefix + child)
    return mods, edges


def components(mods, edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
                out.append(sorted(comp))

    for v in sorted(mods):
        if v not in index:
            visit(v)
    return out


def main():
    roots = sys.argv[1:] or CRATES
    failed = False
    for root in roots:
        mods, edges = edges_of(modules(root))
        cross = [c for c in components(mods, edges) if len({m.split("::")[0] for m in c}) > 1]
        for comp in cross:
            failed = True
            print(f"{root}: import cycle across modules:")
            for m in comp:
                print(f"    {m} -> {', '.join(sorted(x for x in edges[m] if x in comp))}")
        if not cross:
            print(f"{root}: {len(mods)} modules, no import cycle across modules")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
