from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps


def rollups_rebuild(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """The rollups' money lost to misses, summed again: it no longer counts the tokens of a
    call that no cache could have held (breakdowns.CACHEABLE). Built with the service as the
    code has it, which reads today's schema: if a later migration changes the rollup tables
    or what they sum, this step moves there (as it moved here from 0015)."""
    from conversations.models import Organization
    from conversations.services.rollups import organization_rebuild

    if not apps.get_model("conversations", "UsageRecord").objects.exists():
        return
    for organization in Organization.objects.only("id", "time_zone"):
        organization_rebuild(organization=organization)


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0019_conversation_totals_lost_index"),
    ]

    operations = [
        migrations.RunPython(rollups_rebuild, migrations.RunPython.noop, elidable=True),
    ]
