#!/usr/bin/env python3
"""Import graph of a crate's modules and its cycles (Tarjan's SCC).

Usage: scripts/module_cycles.py [SRC_DIR]   (default: framework/src)

Nodes are modules (one per file; an inline `mod tests { .. }` or a `#[path] mod tests;` file is
its own node `<parent>::tests`). An edge A -> B is a `crate::`/`super::`/`self::` path in A's code
(comments stripped; `use` trees with braces expanded) whose longest module prefix is B. Paths
through a re-export in lib.rs resolve to the module that defines the item. Exit status 1 when a
cycle exists.
"""
import os
import re
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "framework/src"
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def file_module(rel):
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return "::".join(parts)


def strip_comments(text):
    out = []
    for line in text.split("\n"):
        # a `//` inside a string literal (a URL) would cut the line short; only cut outside strings
        in_str = False
        cut = len(line)
        i = 0
        while i < len(line) - 1:
            c = line[i]
            if c == '"' and (i == 0 or line[i - 1] != "\\"):
                in_str = not in_str
            elif not in_str and line[i:i + 2] == "//":
                cut = i
                break
            i += 1
        out.append(line[:cut])
    return "\n".join(out)


def parse_tree(s, i, prefix, out):
    """Parse a path / use tree at s[i:]; append full paths (lists of segments) to out."""
    path = list(prefix)
    while True:
        while i < len(s) and s[i].isspace():
            i += 1
        if i < len(s) and s[i] == "{":
            i += 1
            while True:
                while i < len(s) and (s[i].isspace() or s[i] == ","):
                    i += 1
                if i >= len(s) or s[i] == "}":
                    return i + 1
                i = parse_tree(s, i, path, out)
        m = IDENT.match(s, i)
        if not m:
            out.append(path)
            return i
        path = path + [m.group(0)]
        i = m.end()
        if s.startswith("::", i) and not s.startswith("::<", i):
            i += 2
            continue
        out.append(path)
        # skip `as alias`
        m2 = re.match(r"\s+as\s+[A-Za-z_][A-Za-z0-9_]*", s[i:])
        if m2:
            i += m2.end()
        return i


def split_test_blocks(text):
    """Return (main_text, tests_text) where tests_text is the body of an inline `mod tests {}`."""
    m = re.search(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)
    if not m:
        return text, None
    depth, i = 1, m.end()
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[: m.start()] + text[i:], text[m.end(): i - 1]


def main():
    sources = {}  # module -> text
    path_mods = {}  # file rel path -> module, for #[path] test files
    files = []
    for root, _, names in os.walk(SRC):
        for n in names:
            if n.endswith(".rs"):
                files.append(os.path.relpath(os.path.join(root, n), SRC))
    texts = {rel: strip_comments(open(os.path.join(SRC, rel)).read()) for rel in files}
    for rel, text in texts.items():
        for m in re.finditer(r'#\[path\s*=\s*"([^"]+)"\]\s*mod\s+(\w+)\s*;', text):
            target = os.path.normpath(os.path.join(os.path.dirname(rel), m.group(1)))
            path_mods[target] = file_module(rel) + "::" + m.group(2)
    for rel, text in texts.items():
        mod = path_mods.get(rel) or file_module(rel)
        main_text, tests = split_test_blocks(text)
        sources[mod] = main_text
        if tests is not None:
            sources[mod + "::tests" if mod else "tests"] = tests
    modules = set(sources)

    # lib.rs re-exports: `pub use a::b::{X, Y};` -> X defined in a::b
    reexports = {}
    lib = sources.get("", "")
    for m in re.finditer(r"pub use\s+", lib):
        paths = []
        parse_tree(lib, m.end(), [], paths)
        for p in paths:
            mod = "::".join(p[:-1])
            if mod in modules:
                reexports[p[-1]] = mod

    def resolve(segments):
        for k in range(len(segments), 0, -1):
            cand = "::".join(segments[:k])
            if cand in modules:
                return cand
        if segments and segments[0] in reexports:
            return reexports[segments[0]]
        return None

    edges = set()
    for mod, text in sources.items():
        if mod == "":
            continue  # lib.rs declares and re-exports; it imports nothing
        for m in re.finditer(r"\b(crate|super|self)::", text):
            paths = []
            parse_tree(text, m.end(), [], paths)
            base = [] if m.group(1) == "crate" else mod.split("::")
            if m.group(1) == "super":
                base = base[:-1]
            for p in paths:
                full = base + p
                target = resolve(full) if full else None
                if target is None and m.group(1) != "crate":
                    target = "::".join(base) or None
                if target and target != mod and target != "":
                    edges.add((mod, target))

    nodes = sorted(m for m in modules if m)
    graph = {n: sorted(t for (s, t) in edges if s == n) for n in nodes}
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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
            sccs.append(comp)

    for v in nodes:
        if v not in index:
            strong(v)
    cycles = [sorted(c) for c in sccs if len(c) > 1]
    tests = [n for n in nodes if n.endswith("::tests") or n == "tests"]
    prod_edges = [(s, t) for (s, t) in edges if not s.endswith("::tests")]
    print(f"{SRC}: {len(nodes)} modules ({len(nodes) - len(tests)} + {len(tests)} test modules), "
          f"{len(edges)} edges ({len(prod_edges)} outside tests), {len(cycles)} cycles")
    for c in cycles:
        print("cycle:", " , ".join(c))
    if "-v" in sys.argv:
        for s, t in sorted(edges):
            print(f"  {s} -> {t}")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
