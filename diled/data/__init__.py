"""Data sets: real ones loaded from offline packages, and small synthetic ones for tests and demos."""
