from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.records import iso_utc
from users.models import ConnectionType, EagleUser


class Command(BaseCommand):
    help = (
        "Issue or revoke the push token with which a user's EAGLE uploader authenticates to "
        "POST /api/push/<cloud_id>. Issuing prints the new token once (only its hash is kept) "
        "and makes any earlier token stop working; without an option, shows whether one exists."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "cloud_id", help="the user's cloud_id, in any case, leading zeros included"
        )
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--issue", action="store_true", help="issue a new token")
        action.add_argument("--revoke", action="store_true", help="revoke the current token")

    def handle(self, *args: Any, cloud_id: str, **options: Any) -> None:
        try:
            user = EagleUser.objects.get(cloud_id=cloud_id)
        except EagleUser.DoesNotExist:
            raise CommandError(f"No user with cloud_id {cloud_id!r}.") from None
        if options["issue"]:
            token = user.issue_push_token()
            self.stdout.write(
                f"Push token of {user.cloud_id} (shown only now; store it in the uploader):"
            )
            self.stdout.write(token)
            self.stdout.write(
                f"Uploader URL: {settings.SITE_URL.rstrip('/')}/api/push/{user.cloud_id} "
                "(send the token as 'Authorization: Bearer <token>', 'X-Push-Token', or as the "
                "HTTP Basic password)."
            )
            if user.connection_type != ConnectionType.PUSH:
                self.stdout.write(
                    self.style.WARNING(
                        f"{user.cloud_id} is not in push mode ({user.connection_type}): its pushes "
                        "are refused (409) until its connection type is set to push."
                    )
                )
        elif options["revoke"]:
            if user.revoke_push_token():
                self.stdout.write(self.style.SUCCESS(f"Push token of {user.cloud_id} revoked."))
            else:
                self.stdout.write(f"{user.cloud_id} had no push token.")
        elif user.push_token_issued_at is not None:
            self.stdout.write(
                f"{user.cloud_id} has a push token issued at {iso_utc(user.push_token_issued_at)}."
            )
        else:
            self.stdout.write(f"{user.cloud_id} has no push token (--issue makes one).")
