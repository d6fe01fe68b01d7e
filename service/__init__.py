"""What each process is made of, beside Postgres: settings, logging and redaction, the gevent wait
for psycopg, per-process state, the fold's wake-up on Redis. Imports nothing of ours."""
