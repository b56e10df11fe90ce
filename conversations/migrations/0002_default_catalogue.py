"""Formerly the default catalogue; it moved to pricing 0002 with the price book.

Kept as a no-op so that databases which applied it and new ones share one migration graph.
A database that ran the old version holds the catalogue already, and pricing 0002 sees it."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("conversations", "0001_initial")]
    operations = [migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop)]
