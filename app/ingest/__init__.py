"""The ingest lane: Segment's and the Tracking API's routes in front of Flask (`lane.py`), reading a body,
per-team budgets, CORS, waking the fold, and what ingest refused (the ledger, the debugger's routes)."""
