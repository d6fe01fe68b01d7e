"""What gunicorn runs: its settings and hooks, its gevent worker, health, metrics."""
