"""netns: slirp-style user-mode networking (see DESIGN.md)."""
