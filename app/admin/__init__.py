"""What a team's admin manages: keys (routes, `flask teams` / `flask keys`, how a key is shown)
and the events the fold set aside."""
