"""Test data. Operators are Django auth users; EAGLE users are the households being logged."""

from datetime import datetime, timedelta
from typing import Any

import factory
from django.contrib.auth.models import User
from django.utils import timezone

from ingestion import hourfiles
from users.models import ConnectionType, EagleUser

OPERATOR_PASSWORD = "correct-horse-battery-staple"


class OperatorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"operator{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.org")
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", OPERATOR_PASSWORD)

    @factory.post_generation
    def saved(obj: Any, create: Any, extracted: Any, **kwargs: Any) -> Any:  # noqa: N805
        if create:
            obj.save()


class ViewerFactory(OperatorFactory):
    username = factory.Sequence(lambda n: f"viewer{n}")
    is_staff = False


class EagleUserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EagleUser
        django_get_or_create = ("cloud_id",)

    cloud_id = factory.Sequence(lambda n: f"{n:06x}")
    email = factory.LazyAttribute(lambda o: f"household-{o.cloud_id}@example.org")
    eagle_password = factory.Sequence(lambda n: f"eagle-secret-{n}")
    connection_type = ConnectionType.CLOUD


class FetchStateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "ingestion.FetchState"
        django_get_or_create = ("user",)

    user = factory.SubFactory(EagleUserFactory)


class IncidentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "ingestion.Incident"

    user = factory.SubFactory(EagleUserFactory)
    failure_class = "gateway_unreachable"
    message = "connection refused"


class HourFileFactory(factory.django.DjangoModelFactory):
    """A manifest row; pass `hour` (an aware UTC hour start) and a state."""

    class Meta:
        model = "ingestion.HourFile"

    user = factory.SubFactory(EagleUserFactory)
    cloud_id = factory.LazyAttribute(lambda o: o.user.cloud_id)
    hour = factory.LazyFunction(lambda: hourfiles.hour_floor(timezone.now()))
    part = 0
    local_path = factory.LazyAttribute(
        lambda o: str(hourfiles.local_path(o.cloud_id, o.hour, o.part))
    )
    key = factory.LazyAttribute(lambda o: hourfiles.archive_key(o.cloud_id, o.hour, o.part))


class TickFactory(factory.django.DjangoModelFactory):
    """One poll of a shard; pass `scheduled_at`. It ran on time unless `late` is given."""

    class Meta:
        model = "ingestion.Tick"

    scheduled_at = factory.LazyFunction(timezone.now)
    started_at = factory.LazyAttribute(lambda o: o.scheduled_at)
    finished_at = factory.LazyAttribute(lambda o: o.scheduled_at + timedelta(seconds=1))


def logged_since(cloud_id: str, moment: datetime) -> EagleUser:
    """A user added at `moment`, the poller having run for a day already: its readings are
    expected from `moment` on (ingestion.expected)."""
    TickFactory(scheduled_at=moment - timedelta(days=1))
    return EagleUserFactory(cloud_id=cloud_id, created_at=moment)
