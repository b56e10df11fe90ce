"""Second half of the move to `pricing`: usage records point at pricing.ModelPrice (the
same table) and conversations stops owning the two models. State only, no SQL."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0004_price_book_leaves_state'),
        ('pricing', '0001_initial'),
    ]

    # State only: the tables stay where they are (see the module docstring).
    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='usagerecord',
                    name='price',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='pricing.modelprice'),
                ),
                migrations.DeleteModel(
                    name='CostRecompute',
                ),
                migrations.DeleteModel(
                    name='ModelPrice',
                ),
            ],
            database_operations=[],
        ),
    ]
