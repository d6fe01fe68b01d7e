"""Compatibility: the fold's wake-up moved to `store/fold_queue.py`, which app/ may import.

Import from `store.fold_queue` in new code; these names stay for existing callers.
"""

from __future__ import annotations

from store.fold_queue import (
    FLAG_TTL_SECONDS,
    FOLD_JOB,
    Wake,
    clear_fold_flag,
    flag_key,
    request_fold,
    wake_fold,
)

__all__ = ["FLAG_TTL_SECONDS", "FOLD_JOB", "Wake", "clear_fold_flag", "flag_key", "request_fold", "wake_fold"]
