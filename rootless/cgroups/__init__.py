"""Delegated cgroup v2 limits for rootless containers.

- core: sans-IO (parse /proc/self/cgroup, mountinfo, controller lists; podman's flags -> files)
- fs: the I/O (probe, create, write limits, join, oom_kill count, freeze, remove)
- container: what run/the monitor/rm call for one container
"""
