"""`make bench`: every CPU benchmark, each printing its ratio against a named baseline."""

from bench import publish, trace, verify, xet_rebuild

if __name__ == "__main__":
    verify.main([])
    publish.main([])  # SeaweedFS comes with the dev dependencies
    xet_rebuild.main([])  # about 2 minutes; SeaweedFS too
    trace.main([])  # about 15 minutes on 2 cores; writes a 2 GB and a 4 GB checkpoint under $TMPDIR
    # bench.download needs nginx and wrk (Debian packages) and runs best against PostgreSQL and Redis:
    #   python -m bench.download --database-url postgres://... --cache-url redis://...
    # bench.audit needs PostgreSQL (it creates and drops its own database):
    #   python -m bench.audit --database-url postgres://postgres@127.0.0.1:5432/weightgate_bench_audit
    #   python -m bench.audit_append --database-url postgres://postgres@127.0.0.1:5432/weightgate_bench_append
