"""`make bench`: every CPU benchmark, each printing its ratio against a named baseline."""

from bench import publish, verify

if __name__ == "__main__":
    verify.main([])
    publish.main([])  # SeaweedFS comes with the dev dependencies
    # bench.download needs nginx and wrk (Debian packages) and runs best against PostgreSQL and Redis:
    #   python -m bench.download --database-url postgres://... --cache-url redis://...
    # bench.audit needs PostgreSQL (it creates and drops its own database):
    #   python -m bench.audit --database-url postgres://postgres@127.0.0.1:5432/weightgate_bench_audit
