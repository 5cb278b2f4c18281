"""Images: references, the local store, archives, layer unpacking."""
