#!/bin/sh
# mmdebstrap --customize-hook: configure the guest root ($1) for the cgroup v2 test lane.
set -eu
root="$1"
echo rlvm > "$root/etc/hostname"
printf '127.0.0.1 localhost rlvm\n' > "$root/etc/hosts"
# The kernel mounts / read-write (root=/dev/vda rw): no fstab entry, so nothing waits for
# udev to announce the device, and no fsck.
: > "$root/etc/fstab"
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$root/etc/systemd/journald.conf.d/volatile.conf"
chroot "$root" passwd -d root >/dev/null
# The unprivileged test user, with subordinate ids, lingering (user@1000.service at boot) and
# every controller delegated to its systemd (Debian's default is "cpu memory pids").
chroot "$root" useradd -m -u 1000 -s /bin/sh rlvm
grep -q '^rlvm:' "$root/etc/subuid" || echo 'rlvm:100000:65536' >> "$root/etc/subuid"
grep -q '^rlvm:' "$root/etc/subgid" || echo 'rlvm:100000:65536' >> "$root/etc/subgid"
mkdir -p "$root/var/lib/systemd/linger"
touch "$root/var/lib/systemd/linger/rlvm"
mkdir -p "$root/etc/systemd/system/user@.service.d"
printf '[Service]\nDelegate=yes\n' > "$root/etc/systemd/system/user@.service.d/delegate.conf"
printf '9p\n9pnet_virtio\nvirtio_console\n' >> "$root/etc/modules"
# The agent: mounts the host's rl checkout and venv (9p, at the paths the kernel command line
# names, so the editable install resolves) and runs tests/vm/agent.py from it.
cat > "$root/usr/local/sbin/rl-vm-boot" <<'EOS'
#!/bin/sh
set -eu
for word in $(cat /proc/cmdline); do
    case "$word" in
        rl.src=*) src=${word#rl.src=} ;;
        rl.venv=*) venv=${word#rl.venv=} ;;
        rl.share=*) share=${word#rl.share=} ;;
    esac
done
modprobe 9pnet_virtio || true
opts=trans=virtio,version=9p2000.L,msize=524288,cache=loose
mkdir -p "$src" "$venv" "$share"
mountpoint -q "$src" || mount -t 9p -o "$opts,ro" rlsrc "$src"
mountpoint -q "$venv" || mount -t 9p -o "$opts,ro" rlvenv "$venv"
mountpoint -q "$share" || mount -t 9p -o "$opts,ro" rlshare "$share"
exec /usr/bin/python3 -B "$src/tests/vm/agent.py" "$(ls /dev/virtio-ports/rl.agent 2>/dev/null || echo /dev/vport1p1)"
EOS
chmod 755 "$root/usr/local/sbin/rl-vm-boot"
cat > "$root/etc/systemd/system/rl-vm-agent.service" <<'EOS'
[Unit]
Description=rl test lane agent
After=systemd-user-sessions.service user@1000.service systemd-udev-settle.service
Wants=user@1000.service

[Service]
ExecStart=/usr/local/sbin/rl-vm-boot
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOS
chroot "$root" systemctl enable rl-vm-agent.service >/dev/null 2>&1 || \
    ln -sf /etc/systemd/system/rl-vm-agent.service "$root/etc/systemd/system/multi-user.target.wants/rl-vm-agent.service"
# A small initramfs (booting is emulated, so every megabyte counts): only what finds the
# virtio disk.
echo MODULES=list > "$root/etc/initramfs-tools/conf.d/rl-vm.conf"
printf 'virtio_pci\nvirtio_blk\next4\n' >> "$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u -k all >/dev/null
# Quicker boots: nothing waits for a network that is not there.
chroot "$root" systemctl mask systemd-networkd-wait-online.service apt-daily.timer \
    apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
    systemd-binfmt.service systemd-journal-flush.service systemd-remount-fs.service \
    systemd-fsck-root.service man-db.timer dpkg-db-backup.timer >/dev/null 2>&1 || true
