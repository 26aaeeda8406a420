"""The operators' console: the figures of the admin dashboard and the decoder playground page."""
