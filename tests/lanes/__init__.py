"""Lane contract suite: every lane backend passes the same tests."""
