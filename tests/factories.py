"""Test data. Operators are Django auth users; EAGLE users are the households being logged."""

import factory
from django.contrib.auth.models import User

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
    def saved(obj, create, extracted, **kwargs):  # type: ignore[no-untyped-def]  # noqa: N805
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
