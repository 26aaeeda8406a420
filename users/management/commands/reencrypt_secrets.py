from typing import Any

from django.core.management.base import BaseCommand, CommandError

from rainlog.stopping import StopRequest
from users.crypto import encrypted_fields, reencrypt_field


class Command(BaseCommand):
    help = (
        "Encrypt every stored secret again under the first key of FIELD_ENCRYPTION_KEYS. Run it "
        "after prepending a new key; once it reports nothing left to re-encrypt, the old keys "
        "can be removed. Safe to interrupt and to run again."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        total = 0
        with StopRequest() as stop:
            for model, field_name in encrypted_fields():
                label = f"{model._meta.label}.{field_name}"
                self.stdout.write(f"{label}: re-encrypting...")
                rotated, current = reencrypt_field(model, field_name, should_stop=stop)
                total += rotated
                self.stdout.write(
                    f"{label}: {rotated} re-encrypted, {current} already under the first key."
                )
                if stop():
                    raise CommandError(
                        "Interrupted: what was done is kept; run the command again to finish."
                    )
        self.stdout.write(
            f"Done: {total} secrets re-encrypted. Every secret is now under the first key."
        )
