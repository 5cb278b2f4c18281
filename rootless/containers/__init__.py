"""Container records: ids, names, state and the per-container directory.

`store.ContainerStore` keeps one row per container in rl.db (table `containers`) and owns
`<data_dir>/containers/<id>/` (`userdata/` for the generated files and config.json, `rootfs/`
as the mountpoint, plus whatever the storage driver makes there). `files` renders the files
podman generates for a container (/etc/hosts, /etc/hostname, /etc/resolv.conf,
/run/.containerenv); `names` makes ids and podman-style random names.
"""
