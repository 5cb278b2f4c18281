"""The per-container monitor: rl's conmon. One small process per detached container.

    rl run -d / rl start ── spawns ──> monitor (setsid, survives the CLI)
                                          └── A keeper (user namespace root) ── B pid 1 ...

- `rootless.monitor.lifecycle` (CLI side) spawns it and waits until the container runs or
  failed to start; stop/kill/restart/rm act on the container and wait for the monitor.
- `rootless.monitor.main` is the monitor: it starts the container with the executor, holds
  its stdio (k8s-file log through `logfile`, attach clients through `attach`), records the
  exit, applies the restart policy (`restart`), schedules healthchecks, removes --rm
  containers and cleans up. The parent-death chain monitor -> A -> B means the container
  never outlives it.
- No trio here: importing trio costs ~14 MB of private memory per process (measured), and a
  detached container's budget is 10 MB PSS; a `selectors` loop does the same job.
"""
