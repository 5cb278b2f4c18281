"""systemd integration: unit files (`rl generate systemd`), Quadlet files, sd_notify."""
