"""The OCI distribution client: pure protocol and format cores (references, short names,
auth challenges and tokens, manifests, auth.json) that the pull/push/login shells drive."""
