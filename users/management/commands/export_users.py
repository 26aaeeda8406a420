import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rainlog.stopping import StopRequest
from users.jsonlines import export_users


class Command(BaseCommand):
    help = (
        "Export every EAGLE user as JSON lines (the fields of import_users), to standard output "
        "or a file. "
        "Passwords are left out unless --with-passwords is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--with-passwords",
            action="store_true",
            help="include each user's EAGLE password in clear (eagle_password): keep it secret",
        )
        parser.add_argument("--output", "-o", help="write to this file instead of standard output")

    def handle(self, *args: Any, with_passwords: bool, output: str | None, **options: Any) -> None:
        if with_passwords:
            self.stderr.write("This export contains EAGLE passwords in clear.")
        if output is None:
            count = self._export(lambda line: self.stdout.write(line, ending=""), with_passwords)
            # Standard output carries the lines only; the count goes to standard error.
            self.stderr.write(f"Exported {count} users.")
            return
        target = Path(output)
        partial = target.with_name(f".{target.name}.partial")
        # A file holding passwords is readable by its owner only, from its first byte on.
        mode = 0o600 if with_passwords else 0o644
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        except OSError as exc:
            raise CommandError(f"Cannot write {partial}: {exc.strerror}.") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                count = self._export(out.write, with_passwords)
            # Readers never see a half-written export: it appears complete, or not at all.
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        self.stdout.write(f"Exported {count} users to {target}.")

    def _export(self, write: Callable[[str], Any], with_passwords: bool) -> int:
        count = 0
        with StopRequest() as stop:
            for line in export_users(with_passwords=with_passwords):
                if stop():
                    raise CommandError(
                        f"Interrupted after {count} users: the export was not finished."
                    )
                write(line)
                count += 1
        return count
