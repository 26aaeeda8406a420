from importlib import import_module

from django.db import migrations

# SQLite (the embedded default) has no readings table.
PostgreSQLOnlyRunSQL = import_module("ingestion.migrations.0007_readings_store").PostgreSQLOnlyRunSQL

# Fleet-wide queries select by meter time alone, which the primary key (cloud_id first) cannot
# narrow. Each load appends one hour's rows to its day's partition, so pages follow meter time
# closely: a BRIN index finds an hour's pages at almost no cost to the loads
# (readings_store.refresh_partitions summarises the pages a pass wrote). Partitions made later
# inherit it.
CREATE_INDEX = "CREATE INDEX readings_meter_time_brin ON readings USING brin (meter_time)"


class Migration(migrations.Migration):
    dependencies = [
        ("ingestion", "0009_poller_capacity"),
    ]

    operations = [
        PostgreSQLOnlyRunSQL(CREATE_INDEX, "DROP INDEX readings_meter_time_brin"),
    ]
