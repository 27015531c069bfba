"""Inserting many rows of one model at once, for the writers that append in batches (the audit chain,
spooled download events).

On PostgreSQL a batch goes in with COPY, its ids drawn from the table's sequence first: Django's
`bulk_create` spends most of its time per row compiling the INSERT, which COPY does not need. Other
databases (SQLite, the embedded default) take `bulk_create`.
"""

from django.db import connections, models, router

# Below this many rows a plain INSERT is as quick, and is one round trip instead of two.
COPY_FROM_ROWS = 8
# Fields whose values psycopg sends exactly as the ORM's INSERT would, with nothing for the field to
# convert; each other field (dates, JSON, addresses, where "" means NULL, anything custom) prepares
# its value as the ORM does.
SENT_AS_IS = (
    models.AutoField,
    models.BigAutoField,
    models.BigIntegerField,
    models.BooleanField,
    models.CharField,
    models.ForeignKey,
    models.IntegerField,
    models.PositiveBigIntegerField,
    models.PositiveIntegerField,
    models.PositiveSmallIntegerField,
    models.SmallIntegerField,
    models.TextField,
)


def insert_all(model, objects: list) -> list:
    """Insert `objects` (all new instances of `model`) and give each its primary key."""
    connection = connections[router.db_for_write(model)]
    if connection.vendor != "postgresql" or len(objects) < COPY_FROM_ROWS:
        return model.objects.bulk_create(objects)
    meta = model._meta
    fields = meta.concrete_fields
    as_is = [type(field) in SENT_AS_IS for field in fields]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [meta.db_table, meta.pk.column, len(objects)],
        )
        for instance, (key,) in zip(objects, cursor.fetchall(), strict=True):
            instance.pk = key
        columns = ", ".join(quote(field.column) for field in fields)
        with cursor.cursor.copy(f"COPY {quote(meta.db_table)} ({columns}) FROM STDIN") as copy:
            for instance in objects:
                copy.write_row(
                    [
                        getattr(instance, field.attname)
                        if plain
                        else field.get_db_prep_save(field.pre_save(instance, True), connection)
                        for field, plain in zip(fields, as_is, strict=True)
                    ]
                )
    for instance in objects:
        instance._state.adding, instance._state.db = False, connection.alias
    return objects
