"""The benchmark harness behind ``make bench``: figures, not tests (see bench/README.md)."""
