"""`flask events import`: reading archives into a team's events (`docs/import.md`)."""
