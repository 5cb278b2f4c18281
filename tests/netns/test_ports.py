"""`-p` parsing (pure): podman's syntax and podman's error messages."""

from __future__ import annotations

import pytest

from netns.ports import PortMapping, PortSpecError, parse_publish


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", PortMapping("", 0, 80, "tcp", 1)),
        ("8080:80", PortMapping("", 8080, 80, "tcp", 1)),
        ("8080:80/udp", PortMapping("", 8080, 80, "udp", 1)),
        ("8080:80/TCP", PortMapping("", 8080, 80, "tcp", 1)),
        ("127.0.0.1:8080:80", PortMapping("127.0.0.1", 8080, 80, "tcp", 1)),
        ("127.0.0.1::80", PortMapping("127.0.0.1", 0, 80, "tcp", 1)),
        (":80", PortMapping("", 0, 80, "tcp", 1)),
        ("[::1]:8080:80", PortMapping("::1", 8080, 80, "tcp", 1)),
        ("[0:0::1]::80/udp", PortMapping("::1", 0, 80, "udp", 1)),
        ("8000-8002:80-82", PortMapping("", 8000, 80, "tcp", 3)),
        ("80-81", PortMapping("", 0, 80, "tcp", 2)),
        ("10.0.0.1:8000-8001:9000-9001/udp", PortMapping("10.0.0.1", 8000, 9000, "udp", 2)),
        ("65535", PortMapping("", 0, 65535, "tcp", 1)),
    ],
)
def test_valid(spec: str, expected: PortMapping) -> None:
    assert parse_publish(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("abc", 'parsing container port: invalid port number: strconv.Atoi: parsing "abc"'),
        ("80/tcp/udp", "invalid port format - protocol can only be specified once"),
        ("1.2.3.4:80:80:80", "invalid port format - format is [[hostIP:]hostPort:]containerPort"),
        ("::1:80:80", "invalid port format - format is [[hostIP:]hostPort:]containerPort"),
        ("[::1:8080:80", "invalid port format - format is [[hostIP:]hostPort:]containerPort"),
        (
            "70000",
            "parsing container port: port numbers must be between 1 and 65535 (inclusive), "
            "got 70000",
        ),
        ("0", "parsing container port: port numbers must be between 1 and 65535"),
        ("8080:0", "parsing container port: port numbers must be between 1 and 65535"),
        ("0:80", "parsing host port: port numbers must be between 1 and 65535 (inclusive), got 0"),
        ("8080-8081:80", "host and container port ranges have different lengths: 2 vs 1"),
        ("8080:80-81", "host and container port ranges have different lengths: 1 vs 2"),
        (
            "80-79",
            "parsing container port: the end port of a range must be higher than the start "
            "port - 79 is not higher than 80",
        ),
        ("80-", "parsing container port: must provide ending number for port range"),
        ("8080:80/xyz", 'unrecognized protocol "xyz" in port mapping'),
        ("8080:80/", "must provide a non-empty protocol to publish"),
        ("80:", "must provide a non-empty container port to publish"),
        ("", "must provide a non-empty container port to publish"),
        ("/tcp", "must provide a non-empty container port to publish"),
        ("-1", "parsing container port: port numbers cannot be negative"),
        ("localhost:8080:80", 'cannot parse "localhost" as an IP address'),
        ("1.2.3.4:80", 'parsing host port: invalid port number: strconv.Atoi: parsing "1.2.3.4"'),
        ("[::1]:80", "invalid port format - must provide host and destination port if specifying"),
        (
            "65535-65536",
            "parsing container port: port numbers must be between 1 and 65535 "
            "(inclusive), got 65536",
        ),
        ("80/sctp", "sctp"),
        ("٨٠", "invalid port number"),
    ],
)
def test_invalid(spec: str, message: str) -> None:
    with pytest.raises(PortSpecError) as info:
        parse_publish(spec)
    assert message in str(info.value)


def test_mapping_pairs_and_str() -> None:
    mapping = parse_publish("127.0.0.1:8000-8002:80-82/udp")
    assert mapping.pairs() == [(8000, 80), (8001, 81), (8002, 82)]
    assert str(parse_publish("8080:80")) == "80/tcp -> 0.0.0.0:8080"
    assert str(parse_publish("[::1]:8080:80")) == "80/tcp -> [::1]:8080"
    assert parse_publish("80-81").pairs() == [(0, 80), (0, 81)]
    assert mapping.replace(protocol="tcp").protocol == "tcp"
    assert mapping.as_dict()["range"] == 3
