from django.db import migrations

from access.sealed_secrets import seal, unseal

# Where allauth keeps each kind's secrets in Authenticator.data: single values, and lists of them.
SECRETS = {"totp": (["secret"], []), "recovery_codes": (["seed"], ["migrated_codes"])}


def rewritten(apps, change):
    Authenticator = apps.get_model("mfa", "Authenticator")
    for authenticator in Authenticator.objects.filter(type__in=SECRETS).iterator():
        single, listed = SECRETS[authenticator.type]
        data = dict(authenticator.data)
        for name in single:
            if isinstance(data.get(name), str):
                data[name] = change(data[name])
        for name in listed:
            if isinstance(data.get(name), list):
                data[name] = [change(value) for value in data[name]]
        if data != authenticator.data:
            Authenticator.objects.filter(pk=authenticator.pk).update(data=data)


def seal_stored(apps, schema_editor):
    rewritten(apps, seal)


def unseal_stored(apps, schema_editor):
    rewritten(apps, unseal)


class Migration(migrations.Migration):
    """The second factors' secrets, stored in the clear until now, sealed (access.sealed_secrets)."""

    dependencies = [
        ("access", "0007_publisher"),
        ("mfa", "0003_authenticator_type_uniq"),
    ]

    operations = [migrations.RunPython(seal_stored, unseal_stored)]
