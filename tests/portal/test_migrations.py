"""The migrations in the repository match the models: nothing is left for makemigrations to write."""

import pytest


@pytest.mark.django_db
def test_the_migrations_match_the_models():
    from django.core.management import call_command

    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
