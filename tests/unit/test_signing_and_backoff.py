import base64
import random
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from clearance.config import Settings
from clearance.errors import InvalidInput
from clearance.outbound.signing import webhook_headers
from clearance.scheduled.notifier import BACKOFF_CAP_SECONDS, backoff_seconds

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_signed_headers_verify_with_the_standard_webhooks_reference():
    now = datetime.now(UTC)
    body = b'{"EventTypeID":5}'
    headers = webhook_headers(SECRET, "msg_1", now, body)
    assert Webhook(SECRET).verify(body, headers) == {"EventTypeID": 5}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(b'{"EventTypeID":4}', headers)


def test_without_a_secret_there_is_no_signature_but_id_and_timestamp_remain():
    headers = webhook_headers(None, "msg_2", datetime(2026, 1, 1, tzinfo=UTC), b"{}")
    assert "webhook-signature" not in headers
    assert headers["webhook-id"] == "msg_2"
    assert headers["webhook-timestamp"] == "1767225600"


def test_backoff_grows_with_jitter_and_is_capped():
    rng = random.Random(7)
    first = [backoff_seconds(1, rng) for _ in range(200)]
    assert all(0.5 <= x <= 1.0 for x in first)
    assert len({round(x, 6) for x in first}) > 100  # jittered, not fixed
    fifth = [backoff_seconds(5, rng) for _ in range(50)]
    assert all(8 <= x <= 16 for x in fifth)
    assert all(backoff_seconds(30, rng) <= BACKOFF_CAP_SECONDS for _ in range(50))


def test_settings_from_environment_and_bad_time_zone():
    s = Settings.from_env({"CLEARANCE_PORT": "9000", "CLEARANCE_TIMEZONE": "Europe/Malta"})
    assert s.port == 9000 and s.tz.key == "Europe/Malta"
    assert Settings.from_env({}, port=1234).port == 1234
    with pytest.raises(InvalidInput):
        Settings.from_env({"CLEARANCE_TIMEZONE": "Mars/Olympus"})
