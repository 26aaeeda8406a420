"""Admin for incidents, fetch state and ticks."""
