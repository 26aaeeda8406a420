"""The archive: the storage interface (store), shipping hour files to it (rotation), checking it (audit)."""
