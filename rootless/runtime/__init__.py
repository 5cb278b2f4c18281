"""The container runtime: OCI runtime-spec config.json in, a running rootless container out.

`executor.run_container` is the entry point; `mounts`, `process`, `terminal` and `init` are the
steps it runs inside the container's namespaces. This package's __init__ stays empty so that
importing one runtime module does not pull in the others.
"""
