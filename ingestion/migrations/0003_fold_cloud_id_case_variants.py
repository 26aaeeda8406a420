from django.db import migrations


def fold(apps, schema_editor):
    from ingestion.case_duplicates import fold_case_variants

    fold_case_variants(apps.get_model("users", "EagleUser"), apps.get_model("ingestion", "HourFile"))


class Migration(migrations.Migration):
    """cloud_ids that differ only in case name one gateway: fold them into the lower-case id
    (ingestion/case_duplicates.py), before the columns start keeping lower case."""

    dependencies = [
        ("ingestion", "0002_hour_file_newest_timestamps"),
        ("users", "0001_initial"),
    ]

    operations = [migrations.RunPython(fold, migrations.RunPython.noop)]
