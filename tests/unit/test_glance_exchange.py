from gateway.errors import Operation
from gateway.glance_exchange import _URL_TEMPLATES


def test_every_operation_has_a_url_template_for_its_span() -> None:
    # A missing one would fail every request of that operation, but only with tracing on.
    assert set(_URL_TEMPLATES) == set(Operation)
