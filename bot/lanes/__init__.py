"""Per-session lane queues: one FIFO lane per conversation, a global cap on running turns."""
