from django.contrib.admin.apps import AdminConfig


class RainlogAdminConfig(AdminConfig):
    """django.contrib.admin with rainlog's site: the fleet dashboard and the console's views."""

    default_site = "rainlog.admin.RainlogAdminSite"
