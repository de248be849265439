"""The session name streamsync gives its AssumeRole calls: the tables' account sees it in
CloudTrail, and STS refuses names with other characters or over 64 of them."""

from __future__ import annotations

from streamsync.assumerole import session_name
from streamsync.config import AwsConfig

ROLE = "arn:aws:iam::210987654321:role/streamsync-reader"


def test_the_session_is_named_after_the_worker() -> None:
    aws = AwsConfig(region="us-east-1", role_arn=ROLE)

    assert session_name(aws, "ip-10-0-0-7.ec2.internal-41-a1b2") == (
        "streamsync-ip-10-0-0-7.ec2.internal-41-a1b2"
    )


def test_a_worker_id_is_cut_to_what_sts_accepts() -> None:
    aws = AwsConfig(region="us-east-1", role_arn=ROLE)

    assert session_name(aws, "orders/pod 3:é") == "streamsync-orders-pod-3--"
    long = session_name(aws, "w" * 100)
    assert long == "streamsync-" + "w" * 53
    assert len(long) == 64


def test_a_configured_session_name_is_used_as_it_is() -> None:
    aws = AwsConfig(region="us-east-1", role_arn=ROLE, session_name="orders-sync@eu")

    assert session_name(aws, "worker-1") == "orders-sync@eu"
