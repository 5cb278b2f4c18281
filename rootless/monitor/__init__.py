"""The per-container monitor: rl's conmon. One small process per detached container.

    rl run -d / rl start ── spawns ──> monitor (setsid, survives the CLI)
                                          └── the container's pid 1 (its direct child)

- `rootless.containers.lifecycle` (CLI side) spawns it and waits until the container runs or
  failed to start; stop/kill/restart/rm act on the container and wait for the monitor.
- One pid, two programs (memory: a detached container's budget is 10 MB PSS):
  * the starter, `rootless.monitor.main` (heavy: store, runtime, cgroups, network set-up),
    starts the container with the executor and tells the CLI it runs; then it execs
  * the watcher, `rootless.monitor.watch` (a fresh `python -S` importing only os, selectors,
    socket, signal, time and the lean `attach`/`logwriter`; ~4 MB PSS, ~5.5 MB with the
    network driver), which holds the container's stdio (k8s-file log, attach clients), runs
    the network driver and the healthcheck timer, forwards stop signals, and reaps the
    container; then it execs the starter again (`--exited CODE`) to record the exit, tell
    attach clients, apply the restart policy (`restart`: start again, back to the watcher)
    or clean up (remove an --rm container). What crosses each exec is fds and KEY=VALUE
    words (`Watcher.handoff`), and the container's helper processes, the monitor's children
    (a fuse driver's helper; `-p` port publishers: host sockets and a dialer in the
    container's netns), by pid and fds (`rootless.monitor.helpers`). Only when the exec
    fails does the starter run the same Watcher in its own process.
- No keeper process: the executor's namespace keeper creates the container's pid 1 with
  CLONE_PARENT, so it is the monitor's own child, and ends (rootless.runtime.executor). The
  parent-death signal of pid 1 then follows the monitor (exec keeps it armed), so the
  container never outlives it; stop signals go to a child, whose pid cannot be reused.
- No trio here: importing trio costs ~14 MB of private memory per process (measured); a
  `selectors` loop does the same job.
"""
