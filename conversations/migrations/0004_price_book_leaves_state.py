"""The price book moves to the `pricing` app (ModelPrice, CostRecompute) without touching
a row: these operations change Django's view of the models only. The tables keep their
names (`db_table` on the moved models), so an existing database migrates forward as is."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0003_cost_recompute'),
    ]

    # State only: the tables stay where they are (see the module docstring).
    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name='costrecompute',
                    name='organization',
                ),
                migrations.RemoveField(
                    model_name='costrecompute',
                    name='requested_by',
                ),
                migrations.RemoveField(
                    model_name='modelprice',
                    name='organization',
                ),
            ],
            database_operations=[],
        ),
    ]
