"""The fold's SQL: the statements that turn stored events into customers, identities,
traits, groups and timelines, by the tables they own (docs/architecture.md, "Who owns
each table"). The RQ side that runs them (jobs, turns, the sweep, poison isolation) is
`workers/`."""
