"""What the fault suite tells: its progress on stderr, and a row per fault in the table
it prints (docs/operations.md)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

RECOVERY_BOUND_SECONDS = 10.0  # docs/operations.md
STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"bin/faults [{time.monotonic() - STARTED:5.1f}s]: {message}", file=sys.stderr, flush=True)


@dataclass
class Row:
    name: str
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    errors_5xx: int = 0
    errors_503: int = 0
    recovery: float | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        if self.note.startswith("skipped"):
            return True
        return (
            not self.note
            and self.lost == 0
            and self.duplicated == 0
            and self.errors_5xx == 0
            and self.recovery is not None
            and self.recovery <= RECOVERY_BOUND_SECONDS
        )


def table(rows: list[Row]) -> str:
    head = ["fault", "acked", "lost", "dup", "5xx", "503 (expected)", "empty backlog after", "result"]
    lines = [head]
    for row in rows:
        recovered = f"{row.recovery:.1f}s" if row.recovery is not None else "-"
        lines.append(
            [
                row.name,
                str(row.acknowledged),
                str(row.lost),
                str(row.duplicated),
                str(row.errors_5xx),
                str(row.errors_503),
                recovered,
                ("ok" if row.ok else "FAIL") + (f" ({row.note})" if row.note else ""),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])) + "  " + line[-1])
        if n == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)
