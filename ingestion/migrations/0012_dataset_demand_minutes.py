from django.db import migrations, models
from django.utils import timezone


def export_summaries_of_exported_hours(apps, schema_editor):
    """Hours exported before the demand summary existed have none: export them again (a new
    version, by the scheduled export) so that every hour with demand readings has one."""
    DatasetHour = apps.get_model("ingestion", "DatasetHour")
    with_demand = DatasetHour.objects.filter(
        state="exported", files__state="current", files__record_type="demand"
    )
    DatasetHour.objects.filter(pk__in=with_demand.values("pk")).update(
        state="pending", next_attempt_at=None, updated_at=timezone.now()
    )


class Migration(migrations.Migration):
    dependencies = [
        ("ingestion", "0011_held_readings"),
    ]

    operations = [
        migrations.AddField(
            model_name="datasetfile",
            name="content",
            field=models.CharField(
                choices=[
                    ("readings", "Readings"),
                    ("demand_minutes", "Demand per household-minute"),
                ],
                default="readings",
                max_length=16,
            ),
        ),
        migrations.RunPython(export_summaries_of_exported_hours, migrations.RunPython.noop),
    ]
