import uuid

from django.db import migrations, models


def give_codes(apps, schema_editor):
    """Each existing membership its own code (a column default would give them all one)."""
    Membership = apps.get_model("conversations", "Membership")
    for membership in Membership.objects.only("pk"):
        Membership.objects.filter(pk=membership.pk).update(code=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0007_import_job_files_removed"),
    ]

    operations = [
        migrations.AddField(
            model_name="membership",
            name="code",
            field=models.UUIDField(null=True, editable=False),
        ),
        migrations.RunPython(give_codes, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="membership",
            name="code",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
    ]
