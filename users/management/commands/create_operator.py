import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from knox.models import AuthToken


class Command(BaseCommand):
    help = (
        "Create an operator account without prompts: staff (may change things) by default, or a "
        "read-only viewer with --viewer. The password is read from standard input with "
        "--password-stdin; without it the account signs in with API tokens only (--token)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--viewer", action="store_true", help="read-only access instead of staff"
        )
        parser.add_argument(
            "--password-stdin", action="store_true", help="read the password from standard input"
        )
        parser.add_argument(
            "--token",
            action="store_true",
            help="also issue an API token and print it (it is shown this once only)",
        )

    def handle(
        self,
        *args: Any,
        username: str,
        email: str,
        viewer: bool,
        password_stdin: bool,
        token: bool,
        **options: Any,
    ) -> None:
        user_model = get_user_model()
        if user_model.objects.filter(username=username).exists():
            raise CommandError(f"An account named {username!r} exists already.")
        operator = user_model(username=username, email=email, is_staff=not viewer)
        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
            try:
                validate_password(password, operator)
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
            operator.set_password(password)
        else:
            operator.set_unusable_password()
        with transaction.atomic():
            operator.save()
            issued = AuthToken.objects.create(user=operator)[1] if token else None
        role = "read-only viewer" if viewer else "staff operator"
        self.stdout.write(f"Created {role} {username!r}.")
        if issued:
            self.stdout.write(f"API token (shown once, keep it secret): {issued}")
