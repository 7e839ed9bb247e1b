#!/usr/bin/env python3
"""The house rules of src/, checked from the source text (no build needed):

1. no import cycle between modules (a file and its parent or children aside: a parent declares
   its children, and a child may use what its parent defines);
2. the runtime (worker/, jobs/ and transaction/) imports no feature: features register with it,
   not the other way round.

Known exceptions being worked off are listed in scripts/import-exceptions.txt, one
"<from module> -> <to module>" per line; a new violation fails, and so does an exception that no
longer occurs (so the list only shrinks). Exit status 1 on failure, with each violation named.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
EXCEPTIONS = ROOT / "scripts" / "import-exceptions.txt"
RUNTIME = ("worker", "jobs", "transaction")
# Shared by everything: the crate's plumbing, not features.
COMMON = {
    "settings", "error", "environment", "query", "build_info", "shared_memory", "transaction", "worker", "jobs",
    "compat",
}


def module_of(path: Path) -> tuple:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return tuple(parts)


def modules() -> dict:
    return {module_of(p): p for p in SRC.rglob("*.rs")}


def expand(text: str) -> list:
    """Every path of a `use` tree, braces expanded: `a::{b, c::d}` -> [a::b, a::c::d]."""
    text = re.sub(r"\s+", "", text)
    depth, start, items = 0, 0, []
    brace = text.find("{")
    if brace < 0:
        return [text]
    prefix, inner = text[:brace], text[brace + 1 : text.rfind("}")]
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    return [p for item in items if item for p in expand(prefix + item)]


def references(path: Path, here: tuple) -> set:
    text = re.sub(r"//[^\n]*", "", path.read_text())
    paths = []
    for use in re.findall(r"\buse\s+([^;]+);", text):
        paths.extend(expand(use))
    paths.extend(re.findall(r"\b((?:crate|super)(?:::[A-Za-z_][A-Za-z0-9_]*)+)", text))
    found = set()
    for p in paths:
        words = [w for w in p.split("::") if w and w != "self"]
        if not words:
            continue
        if words[0] == "crate":
            base, words = (), words[1:]
        elif words[0] == "super":
            base = here
            while words and words[0] == "super":
                base, words = base[:-1], words[1:]
        else:
            continue
        found.add(base + tuple(words))
    return found


def resolve(path: tuple, known: dict) -> tuple:
    """The longest known module that `path` names (or names an item of)."""
    for n in range(len(path), -1, -1):
        if path[:n] in known:
            return path[:n]
    return ()


def related(a: tuple, b: tuple) -> bool:
    return a[: len(b)] == b or b[: len(a)] == a


def graph() -> dict:
    known = modules()
    edges = {m: set() for m in known}
    for m, path in known.items():
        for ref in references(path, m):
            target = resolve(ref, known)
            if target != m and not related(m, target):
                edges[m].add(target)
    return edges


def cycles(edges: dict) -> list:
    found, state, stack = [], {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                found.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return found


def name(m: tuple) -> str:
    return "::".join(m) or "crate"


def main() -> int:
    edges = graph()
    violations = set()
    for cycle in cycles(edges):
        for a, b in zip(cycle, cycle[1:]):
            violations.add(f"{name(a)} -> {name(b)}")
    for m, targets in edges.items():
        if m and m[0] in RUNTIME:
            for t in targets:
                if t and t[0] not in COMMON:
                    violations.add(f"{name(m)} -> {name(t)}")
    allowed = set()
    if EXCEPTIONS.exists():
        for line in EXCEPTIONS.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                allowed.add(line)
    new = sorted(violations - allowed)
    stale = sorted(allowed - violations)
    for v in new:
        print(f"check-imports: {v}: a cycle, or the runtime importing a feature", file=sys.stderr)
    for v in stale:
        print(f"check-imports: {v} no longer occurs: remove it from {EXCEPTIONS.name}", file=sys.stderr)
    if new or stale:
        return 1
    print(f"check-imports: {len(edges)} modules, no new cycle, the runtime imports "
          f"{len(violations)} known feature(s) ({EXCEPTIONS.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
