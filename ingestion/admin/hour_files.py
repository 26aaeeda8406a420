"""Admin for the rotation manifest (hour files)."""
