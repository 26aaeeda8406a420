from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from users.credentials import check_credentials
from users.models import EagleUser


class Command(BaseCommand):
    help = (
        "Try a user's credentials against its EAGLE now and print the classified result "
        "(exit status 1 unless they work). Fetch metadata and incidents are not changed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "cloud_id", help="the user's cloud_id, in any case, leading zeros included"
        )

    def handle(self, *args: Any, cloud_id: str, **options: Any) -> None:
        try:
            user = EagleUser.objects.get(cloud_id=cloud_id)
        except EagleUser.DoesNotExist:
            raise CommandError(f"No user with cloud_id {cloud_id!r}.") from None
        self.stdout.write(f"Checking {user.cloud_id} ({user.get_connection_type_display()})...")
        check = check_credentials(user)
        self.stdout.write(check.describe(), self.style.SUCCESS if check.ok else self.style.ERROR)
        if not check.ok:
            raise CommandError(f"The credentials of {user.cloud_id} were not confirmed.")
