"""Real relay servers for the tests, started on 127.0.0.1 with port 0."""
