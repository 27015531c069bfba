"""`make bench`: every CPU benchmark, each printing its ratio against a named baseline."""

from bench import verify

if __name__ == "__main__":
    verify.main([])
