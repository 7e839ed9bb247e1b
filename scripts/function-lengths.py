#!/usr/bin/env python3
"""The longest functions and files outside tests, from the source text (no build needed):
`python3 scripts/function-lengths.py [N]` prints the N longest functions (default 10) of src/,
core/src/ and cli/src/, and every file over 600 lines before its test module. A measurement for
the house rules (functions one can read on a screen, files one can find one's way in), not a
check: it never fails."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_MODULE = re.compile(r'\n#\[cfg\((?:test|any\(test, feature = "pg_test"\))\)\]\n')
FN = re.compile(r'\s*(?:pub(?:\([a-z ]+\))? )?(?:unsafe )?(?:extern "C-unwind" )?fn (\w+)')
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def without_tests(text: str) -> str:
    cut = TEST_MODULE.search(text)
    return text[: cut.start()] if cut else text


def functions(path: Path):
    lines = without_tests(path.read_text()).split("\n")
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, started = 0, False
        for j in range(i, len(lines)):
            for ch in STRING.sub('""', lines[j]):
                if ch == "{":
                    depth, started = depth + 1, True
                elif ch == "}":
                    depth -= 1
            if started and depth == 0:
                yield j - i + 1, m.group(1)
                break
            if not started and lines[j].rstrip().endswith(";"):
                break


def main() -> None:
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    sources = [
        p
        for d in ("src", "core/src", "cli/src")
        for p in sorted((ROOT / d).rglob("*.rs"))
        if not p.name.endswith("tests.rs")
    ]
    found = [
        (n, str(p.relative_to(ROOT)), name) for p in sources for n, name in functions(p)
    ]
    for n, path, name in sorted(found, reverse=True)[:limit]:
        print(f"{n:5} lines  {path}: {name}")
    for p in sources:
        n = without_tests(p.read_text()).count("\n")
        if n > 600:
            print(f"{n:5} lines before tests: {p.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
