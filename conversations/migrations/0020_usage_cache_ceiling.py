from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

# A record's cache_ceiling from its turn, as services/usage.py's cache_ceiling writes it:
# NULL where a cause of a miss a fix could remove cost the call a hit (a changed, expired or
# overflowed prefix, or one cached under another key), else the simulator's cached tokens.
# A correlated subquery: the same statement runs on PostgreSQL and SQLite.
BACKFILL = """
UPDATE conversations_usagerecord SET cache_ceiling = (
    SELECT CASE
        WHEN t.miss_reason IN ('prefix_changed', 'expired', 'overflow')
          OR (t.miss_reason = 'cold'
              AND t.miss_detail LIKE 'cold: this prefix was cached under prompt_cache_key%%')
        THEN NULL
        ELSE t.simulated_cached_tokens
    END
    FROM conversations_turn t WHERE t.id = conversations_usagerecord.turn_id
)
"""


def ceilings_fill(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if apps.get_model("conversations", "UsageRecord").objects.exists():
        schema_editor.execute(BACKFILL)


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
        migrations.AddField(
            model_name="usagerecord",
            name="cache_ceiling",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(ceilings_fill, migrations.RunPython.noop, elidable=True),
        migrations.RunPython(rollups_rebuild, migrations.RunPython.noop, elidable=True),
    ]
