"""Reference parsing against the distribution project's grammar and its test corpus (as
docker's reference_test.go and normalize_test.go exercise it), with podman's error texts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rootless.errors import RlError
from rootless.registry.reference import (
    DIGEST_BAD_FORMAT,
    DIGEST_BAD_LENGTH,
    DIGEST_UNSUPPORTED,
    INVALID_FORMAT,
    NAME_EMPTY,
    NAME_TOO_LONG,
    NAME_UPPERCASE,
    Reference,
    check_digest,
    parse,
    parse_normalized,
)

F64 = "f" * 64
SHA = f"sha256:{F64}"


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest"),
    [
        ("test_com", "", "test_com", None, None),
        ("test.com:tag", "", "test.com", "tag", None),
        ("test.com:5000", "", "test.com", "5000", None),
        ("test.com/repo:tag", "test.com", "repo", "tag", None),
        ("test:5000/repo", "test:5000", "repo", None, None),
        ("test:5000/repo:tag", "test:5000", "repo", "tag", None),
        (f"test:5000/repo@{SHA}", "test:5000", "repo", None, SHA),
        (f"test:5000/repo:tag@{SHA}", "test:5000", "repo", "tag", SHA),
        ("lowercase:Uppercase", "", "lowercase", "Uppercase", None),
        ("sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com", "bar/baz/quux", None, None),
        (
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            "sub-dom1.foo.com",
            "bar/baz/quux",
            "some-long-tag",
            None,
        ),
        (
            "b.gcr.io/test.example.com/my-app:test.example.com",
            "b.gcr.io",
            "test.example.com/my-app",
            "test.example.com",
            None,
        ),
        ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com", "myimage", "xn--n3h.com", None),
        (
            f"xn--7o8h.com/myimage:xn--7o8h.com@sha512:{'f' * 128}",
            "xn--7o8h.com",
            "myimage",
            "xn--7o8h.com",
            f"sha512:{'f' * 128}",
        ),
        ("foo_bar.com:8080", "", "foo_bar.com", "8080", None),
        ("foo/foo_bar.com:8080", "", "foo/foo_bar.com", "8080", None),
        ("192.168.1.1", "", "192.168.1.1", None, None),
        ("192.168.1.1:tag", "", "192.168.1.1", "tag", None),
        ("192.168.1.1:5000", "", "192.168.1.1", "5000", None),
        ("192.168.1.1/repo", "192.168.1.1", "repo", None, None),
        ("192.168.1.1:5000/repo", "192.168.1.1:5000", "repo", None, None),
        ("[2001:db8::1]/repo", "[2001:db8::1]", "repo", None, None),
        ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]", "repo", "tag", None),
        ("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", "repo", None, None),
        ("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000", "repo", "tag", None),
        (f"[2001:db8::1]:5000/repo@{SHA}", "[2001:db8::1]:5000", "repo", None, SHA),
        (f"[2001:db8::1]:5000/repo:tag@{SHA}", "[2001:db8::1]:5000", "repo", "tag", SHA),
        ("[2001:db8::]:5000/repo", "[2001:db8::]:5000", "repo", None, None),
        ("[::1]:5000/repo", "[::1]:5000", "repo", None, None),
        ("localhost/repo", "localhost", "repo", None, None),
        ("localhost:5000/repo", "localhost:5000", "repo", None, None),
        ("localhost", "", "localhost", None, None),
        ("localhost:5000", "", "localhost", "5000", None),
        ("a-b--c__d/e.f__g-h", "", "a-b--c__d/e.f__g-h", None, None),
        ("busybox:_private", "", "busybox", "_private", None),
        (f"busybox@{SHA}", "", "busybox", None, SHA),
        (f"busybox:1.36@{SHA}", "", "busybox", "1.36", SHA),
        ("Registry.Example.COM/app", "Registry.Example.COM", "app", None, None),
    ],
)
def test_valid_references(
    text: str, domain: str, path: str, tag: str | None, digest: str | None
) -> None:
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert str(ref) == text
    assert ref.is_short_name == (domain == "")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", NAME_EMPTY),
        (":justtag", INVALID_FORMAT),
        (f"@{SHA}", INVALID_FORMAT),
        (f"repo@sha256:{'f' * 60}", DIGEST_BAD_LENGTH),
        (f"repo@sha256:{'f' * 65}", DIGEST_BAD_LENGTH),
        (f"validname@invaliddigest:{F64}", DIGEST_UNSUPPORTED),
        (f"busybox@md5:{F64}", DIGEST_UNSUPPORTED),
        (f"busybox@sha256:{'F' * 64}", DIGEST_BAD_FORMAT),
        ("busybox@sha256:abc", INVALID_FORMAT),
        ("Uppercase:tag", NAME_UPPERCASE),
        ("UPPER", NAME_UPPERCASE),
        ("Foo/bar", NAME_UPPERCASE),
        ("foo/Bar", NAME_UPPERCASE),
        ("test:5000/Uppercase/lowercase:tag", NAME_UPPERCASE),
        ("docker.io/UP/x", NAME_UPPERCASE),
        ("a" * 256, NAME_TOO_LONG),
        ("a/" * 128 + "a:tag", NAME_TOO_LONG),
        ("aa/asdf$$^/aa", INVALID_FORMAT),
        ("[2001:db8::1]", INVALID_FORMAT),
        ("[2001:db8::1]:5000", INVALID_FORMAT),
        ("[2001:db8::1]:tag", INVALID_FORMAT),
        ("[fe80::1%eth0]:5000/repo", INVALID_FORMAT),
        ("[fe80::1%@invalidzone]:5000/repo", INVALID_FORMAT),
        ("a:b:c", INVALID_FORMAT),
        ("a/b:-t", INVALID_FORMAT),
        ("a/b:.t", INVALID_FORMAT),
        ("a:" + "t" * 129, INVALID_FORMAT),
        ("a//b", INVALID_FORMAT),
        ("a/b/", INVALID_FORMAT),
        ("/a", INVALID_FORMAT),
        ("-docker", INVALID_FORMAT),
        ("-docker/docker", INVALID_FORMAT),
        ("docker///docker", INVALID_FORMAT),
        ("docker.io/docker///docker", INVALID_FORMAT),
        ("https://github.com/docker/docker", INVALID_FORMAT),
        ("a..b", INVALID_FORMAT),
        ("a___b", INVALID_FORMAT),
        ("a_", INVALID_FORMAT),
        ("-.example.com/x", INVALID_FORMAT),
        ("busybox\n", INVALID_FORMAT),
        ("busybox:tag\n", INVALID_FORMAT),
        ("bus ybox", INVALID_FORMAT),
        ("busybox:täg", INVALID_FORMAT),  # Go's \w is ASCII
        ("busybox:٣", INVALID_FORMAT),
        ("exämple.com/x", INVALID_FORMAT),
    ],
)
def test_invalid_references(text: str, error: str) -> None:
    with pytest.raises(RlError) as info:
        parse(text)
    assert info.value.message == error


def test_name_length_limit_is_on_the_name_not_the_tag() -> None:
    ref = parse("a/" * 127 + "a:tag-puts-this-over-max")
    assert len(ref.name) == 255 and ref.tag == "tag-puts-this-over-max"
    assert parse("a" * 255 + ":" + "t" * 128).tag == "t" * 128


@pytest.mark.parametrize(
    ("text", "qualified", "familiar"),
    [
        ("ubuntu", "docker.io/library/ubuntu", "ubuntu"),
        ("ubuntu:latest", "docker.io/library/ubuntu:latest", "ubuntu:latest"),
        ("docker.io/library/ubuntu", "docker.io/library/ubuntu", "ubuntu"),
        ("docker.io/ubuntu", "docker.io/library/ubuntu", "ubuntu"),
        ("index.docker.io/library/ubuntu", "docker.io/library/ubuntu", "ubuntu"),
        ("index.docker.io/ubuntu:1", "docker.io/library/ubuntu:1", "ubuntu:1"),
        ("library/ubuntu", "docker.io/library/ubuntu", "ubuntu"),
        ("docker.io/foo/bar", "docker.io/foo/bar", "foo/bar"),
        ("dmcgowan/myapp", "docker.io/dmcgowan/myapp", "dmcgowan/myapp"),
        ("docker.io/library/foo/bar", "docker.io/library/foo/bar", "library/foo/bar"),
        ("localhost/ubuntu", "localhost/ubuntu", "localhost/ubuntu"),
        ("127.0.0.1:5000/ubuntu", "127.0.0.1:5000/ubuntu", "127.0.0.1:5000/ubuntu"),
        ("quay.io/podman/stable:v4", "quay.io/podman/stable:v4", "quay.io/podman/stable:v4"),
        (f"busybox@{SHA}", f"docker.io/library/busybox@{SHA}", f"busybox@{SHA}"),
        ("docker.io/docker:dind", "docker.io/library/docker:dind", "docker:dind"),
    ],
)
def test_normalized_names(text: str, qualified: str, familiar: str) -> None:
    ref = parse_normalized(text)
    assert str(ref) == qualified
    assert ref.familiar() == familiar
    assert parse_normalized(qualified) == ref


def test_normalized_refuses_image_ids() -> None:
    with pytest.raises(RlError, match="cannot specify 64-byte hexadecimal strings"):
        parse_normalized("1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a")
    # 63 hex digits is a plain (short) name
    assert parse_normalized("a" * 63).path == "library/" + "a" * 63


def test_normalized_name_length_includes_the_default_domain() -> None:
    assert parse("a" * 240).path == "a" * 240
    with pytest.raises(RlError, match="255 characters"):
        parse_normalized("a" * 240)


def test_short_names_keep_what_the_user_wrote() -> None:
    assert parse("library/busybox") != parse("busybox")
    assert parse("busybox").qualified() == parse("library/busybox").qualified()
    assert parse("busybox").qualified("quay.io") == Reference("quay.io", "busybox")
    assert parse("quay.io/a/b").qualified() == parse("quay.io/a/b")


def test_default_tag_is_added_only_without_tag_or_digest() -> None:
    assert parse("busybox").with_default_tag().tag == "latest"
    assert parse("busybox:1").with_default_tag().tag == "1"
    digested = parse(f"busybox@{SHA}").with_default_tag()
    assert digested.tag is None and digested.digest == SHA


def test_with_tag_and_digest_validate() -> None:
    ref = parse("quay.io/a/b")
    assert str(ref.with_tag("v1").with_digest(SHA)) == f"quay.io/a/b:v1@{SHA}"
    with pytest.raises(RlError, match="invalid reference format"):
        ref.with_tag("-x")
    with pytest.raises(RlError, match="invalid checksum digest length"):
        ref.with_digest("sha256:abcd")


def test_name_property() -> None:
    assert parse("localhost:5000/a/b:1").name == "localhost:5000/a/b"
    assert parse("a/b:1").name == "a/b"


@pytest.mark.parametrize(
    ("digest", "error"),
    [
        ("sha256", DIGEST_BAD_FORMAT),
        ("sha256:", DIGEST_BAD_FORMAT),
        (":" + F64, DIGEST_BAD_FORMAT),
        ("sha384:" + "a" * 96, None),
        ("sha512:" + "a" * 128, None),
        ("sha512:" + "a" * 64, DIGEST_BAD_LENGTH),
        ("sha256:" + "g" * 64, DIGEST_BAD_FORMAT),
        ("SHA256:" + F64, DIGEST_BAD_FORMAT),
        ("blake3:" + F64, DIGEST_UNSUPPORTED),
        ("bad alg:" + F64, DIGEST_BAD_FORMAT),
    ],
)
def test_check_digest(digest: str, error: str | None) -> None:
    if error is None:
        check_digest(digest)
    else:
        with pytest.raises(RlError) as info:
            check_digest(digest)
        assert info.value.message == error


# --- properties ---------------------------------------------------------------------------

_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_separator = st.sampled_from([".", "_", "__", "-", "--"])
_path_component = st.builds(
    lambda first, rest: first + "".join(s + a for s, a in rest),
    _alnum,
    st.lists(st.tuples(_separator, _alnum), max_size=2),
)
_path = st.lists(_path_component, min_size=1, max_size=4).map("/".join)
_host_label = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
_domain = st.one_of(
    st.lists(_host_label, min_size=2, max_size=3).map(".".join),
    st.just("localhost"),
    st.tuples(_host_label, st.integers(0, 65535)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.just("[::1]:5000"),
)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digest = st.from_regex(r"sha256:[a-f0-9]{64}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.none(), _domain),
    _path,
    st.one_of(st.none(), _tag),
    st.one_of(st.none(), _digest),
)
def test_round_trip_of_generated_references(
    domain: str | None, path: str, tag: str | None, digest: str | None
) -> None:
    text = f"{domain}/{path}" if domain else path
    text += f":{tag}" if tag else ""
    text += f"@{digest}" if digest else ""
    if len(text.split(":")[0].split("@")[0]) > 200:
        return
    ref = parse(text)
    assert (ref.tag, ref.digest) == (tag, digest)
    hub = domain is not None and domain.lower() in ("docker.io", "index.docker.io")
    if not hub:
        assert str(ref) == text
    assert parse(str(ref)) == ref
    qualified = ref.qualified()
    assert parse_normalized(str(qualified)) == qualified
    assert parse_normalized(qualified.familiar()) == qualified


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_either_parses_or_raises_rlerror(text: str) -> None:
    try:
        ref = parse(text)
    except RlError:
        return
    assert parse(str(ref)) == ref
    assert str(ref).isascii()


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[a-z0-9.:/_@-]{1,40}", fullmatch=True))
def test_reference_like_text_either_parses_or_raises_rlerror(text: str) -> None:
    try:
        ref = parse(text)
    except RlError:
        return
    assert parse(str(ref)) == ref
