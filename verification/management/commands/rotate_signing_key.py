from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from verification.signing import rotate_generated_key


class Command(BaseCommand):
    help = (
        "Replace the release-signing key generated under var/ with a new one. Releases signed before keep "
        "their model.sig; the retired public key stays at /api/v1/signing-keys/<fingerprint>.pem."
    )

    def handle(self, *args, **options):
        try:
            key = rotate_generated_key()
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"new signing key {key.fingerprint}; earlier keys are retired but still published")
