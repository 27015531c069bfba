"""What this host lets the process use: CPUs and memory, within its container's or unit's cgroup limits.

Plain Python below every other layer: gunicorn's config, the workers' thread pools and the smoke pass's
memory plan size themselves here, never by the machine's own counts (a container on a large host sees
the host's cores and memory in os.cpu_count() and /proc/meminfo)."""
