"""Compare metrics.csv of the pre-refactor runs (make_old.sh) with the refactored trainers' (make_new.sh), column by column.

Usage: python compare.py [OLD_ROOT] [NEW_ROOT] [NAME ...]
Timing columns (time_*) are skipped. A column is "identical" when every row's text is the same; otherwise the
largest absolute difference is printed. Columns present on one side only are listed.
"""

import csv
import math
import sys
from pathlib import Path


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def compare(old_dir: Path, new_dir: Path) -> tuple[bool, str]:
    a, b = rows(old_dir / "metrics.csv"), rows(new_dir / "metrics.csv")
    if len(a) != len(b):
        return False, f"{len(a)} rows before, {len(b)} after"
    ca, cb = list(a[0]) if a else [], list(b[0]) if b else []
    shared = [c for c in ca if c in cb and not c.startswith("time_")]
    diffs = []
    for c in shared:
        va, vb = [r[c] for r in a], [r[c] for r in b]
        if va != vb:
            d = max((abs(num(x) - num(y)) if not (math.isnan(num(x)) and math.isnan(num(y))) else 0.0) for x, y in zip(va, vb))
            diffs.append(f"{c} (max |diff| {d:.3g})")
    only_new = [c for c in cb if c not in ca]
    only_old = [c for c in ca if c not in cb]
    msg = "identical" if not diffs else "DIFFER: " + ", ".join(diffs)
    msg += f"  [{len(shared)} columns compared"
    if only_new:
        msg += f"; new columns: {', '.join(only_new)}"
    if only_old:
        msg += f"; MISSING columns: {', '.join(only_old)}"
    return not diffs and not only_old, msg + "]"


def main(argv):
    old_root = Path(argv[0]) if argv else Path("/tmp/polab-equivalence/old")
    new_root = Path(argv[1]) if len(argv) > 1 else Path("/tmp/polab-equivalence/new")
    names = argv[2:] or sorted(p.name for p in old_root.iterdir() if (p / "metrics.csv").is_file())
    ok_all = True
    for name in names:
        if not (new_root / name / "metrics.csv").is_file():
            print(f"{name:40s} (no new run)")
            ok_all = False
            continue
        ok, msg = compare(old_root / name, new_root / name)
        ok_all &= ok
        print(f"{name:40s} {msg}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
