"""fuseoverlay: a union filesystem on pyfuse3 (see DESIGN.md)."""
