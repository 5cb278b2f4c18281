"""rl pull / push / login / logout against a real registry (docker-registry) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from tests import images as testimages
from tests.conftest import Rl
from tests.e2e.registry_fixture import (  # noqa: F401  (the fixtures are used by name)
    FakeRegistry,
    Registry,
    auth_registry_fixture,
    fake_registry_fixture,
    mtls_registry_fixture,
    registry_fixture,
    tls_registry_fixture,
)
from tests.images import ArchiveSet, BuiltImage, ImageSpec, build_image, file, layer

BUSYBOX = testimages.BUSYBOX_NAME
INSECURE = "--tls-verify=false"


def store_files(rl: Rl) -> dict[str, list[str]]:
    return {sub: sorted(os.listdir(rl.root / sub)) for sub in ("layers", "blobs/sha256", "tmp")}


def inspect(rl: Rl, name: str) -> dict[str, Any]:
    [result] = json.loads(rl.ok("image", "inspect", name).stdout)
    assert isinstance(result, dict)
    return result


def fresh(rl: Rl, name: str) -> Rl:
    return Rl(rl.user, rl.root.parent / name)


def push_loaded_busybox(rl: Rl, registry: Registry, image_archives: ArchiveSet, repo: str) -> str:
    rl.ok("load", "-i", str(image_archives.docker_archive))
    dest = f"{registry.host}/{repo}"
    result = rl.ok("push", INSECURE, BUSYBOX, dest)
    assert result.stdout == ""
    assert "Writing manifest to image destination" in result.stderr
    return dest


def test_push_then_pull_gives_the_same_image(
    rl: Rl, registry: Registry, image_archives: ArchiveSet
) -> None:
    busybox = image_archives.busybox
    dest = push_loaded_busybox(rl, registry, image_archives, "rl-test/busybox:1")
    assert registry.tags("rl-test/busybox") == ["1"]

    other = fresh(rl, "pulled")
    result = other.ok("pull", INSECURE, dest)
    assert result.stdout == f"{busybox.id}\n"
    lines = result.stderr.splitlines()
    assert lines[0] == f"Trying to pull {dest}..."
    # podman's lines on a pipe: full digests, no progress bars
    assert lines[1] == "Getting image source signatures"
    assert sorted(lines[2:5]) == sorted(f"Copying blob {d}" for d in busybox.layer_digests)
    assert lines[5:] == [
        f"Copying config sha256:{busybox.id}",
        "Writing manifest to image destination",
        "Storing signatures",
    ]
    image = inspect(other, dest)
    assert image["Id"] == busybox.id
    assert image["RootFS"]["Layers"] == busybox.diff_ids
    assert sorted(os.listdir(other.root / "layers")) == sorted(d[7:] for d in busybox.diff_ids)
    for digest in busybox.layer_digests:
        assert (other.root / "blobs/sha256" / digest[7:]).is_file()
    assert os.listdir(other.root / "tmp") == []
    # the container runs from the pulled image
    assert other.ok("run", "--rm", dest, "echo", "hi").stdout == "hi\n"

    # the store it was pushed from has the image: only the name is added
    before = store_files(rl)
    assert rl.ok("pull", "-q", INSECURE, dest).stdout == f"{busybox.id}\n"
    assert store_files(rl) == before
    assert sorted(inspect(rl, dest)["RepoTags"]) == sorted([BUSYBOX, dest])

    # a second pull fetches nothing, -q prints only the ID
    again = other.ok("pull", "-q", INSECURE, dest)
    assert (again.stdout, again.stderr) == (f"{busybox.id}\n", "")
    before = store_files(other)
    again = other.ok("pull", INSECURE, dest)
    assert again.stderr.count("Copying blob") == len(busybox.layers)
    assert store_files(other) == before


def test_pull_by_digest(rl: Rl, registry: Registry, image_archives: ArchiveSet) -> None:
    busybox = image_archives.busybox
    dest = push_loaded_busybox(rl, registry, image_archives, "rl-test/digest:latest")
    digest = inspect(rl, BUSYBOX)["Digest"]
    digest_file = rl.root.parent / "digest"
    rl.ok("push", "-q", INSECURE, "--digestfile", str(digest_file), BUSYBOX, dest)
    assert digest_file.read_text() == digest
    with registry.http() as client:
        head = client.head(
            "/v2/rl-test/digest/manifests/latest",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
    assert head.headers["docker-content-digest"] == digest  # pushed byte for byte
    other = fresh(rl, "bydigest")
    by_digest = f"{registry.host}/rl-test/digest@{digest}"
    assert other.ok("pull", "-q", INSECURE, by_digest).stdout == f"{busybox.id}\n"
    assert inspect(other, by_digest)["Digest"] == digest
    # a digest that is not there
    missing = f"{registry.host}/rl-test/digest@sha256:{'0' * 64}"
    result = other("pull", INSECURE, missing)
    assert result.returncode == 125
    assert "manifest unknown" in result.stderr
    assert dest


def test_missing_tag_is_a_clear_error_and_store_unchanged(
    rl: Rl, registry: Registry, image_archives: ArchiveSet
) -> None:
    push_loaded_busybox(rl, registry, image_archives, "rl-test/missing:present")
    before = store_files(rl)
    result = rl("pull", INSECURE, f"{registry.host}/rl-test/missing:absent")
    assert result.returncode == 125, result
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("Error: ") and "manifest unknown" in line, result.stderr
    assert store_files(rl) == before
    result = rl("pull", INSECURE, f"{registry.host}/no/such/repo")
    assert result.returncode == 125
    assert "manifest unknown" in result.stderr or "not known" in result.stderr


def test_connection_errors(rl: Rl, registry: Registry) -> None:
    from tests.e2e.registry_fixture import free_port

    port = free_port()
    result = rl("pull", INSECURE, f"127.0.0.1:{port}/x/y")
    assert result.returncode == 125
    assert result.stderr.splitlines()[-1] == (
        f"Error: 127.0.0.1:{port}: connection refused: is the registry running on that port?"
    )
    result = rl("pull", f"{registry.host}/x/y")  # plain HTTP registry without --tls-verify=false
    assert result.returncode == 125
    assert "--tls-verify=false" in result.stderr, result
    result = rl("pull", "--platform", "linux", f"{registry.host}/x/y")
    assert result.returncode == 125 and "OS/ARCH" in result.stderr


def test_basic_auth_login_logout(
    rl: Rl, auth_registry: Registry, image_archives: ArchiveSet, user: Any
) -> None:
    host = auth_registry.host
    user_name, password = auth_registry.credentials or ("", "")
    rl.ok("load", "-i", str(image_archives.docker_archive))
    dest = f"{host}/private/busybox:latest"
    rl.ok("push", INSECURE, "--creds", f"{user_name}:{password}", BUSYBOX, dest)

    other = fresh(rl, "authpull")
    denied = other("pull", INSECURE, dest)
    assert denied.returncode == 125
    assert f"rl login {host}" in denied.stderr, denied
    assert other.ok("images", "-q").stdout == ""

    wrong = rl("login", INSECURE, "-u", user_name, "-p", "wrong", host)
    assert wrong.returncode == 125
    assert "invalid username/password" in wrong.stderr, wrong
    auth_file = Path(user.runtime_dir) / "containers/auth.json"
    try:
        ok = rl("login", INSECURE, "-u", user_name, "--password-stdin", host, input=password + "\n")
        assert ok.returncode == 0, ok
        assert ok.stdout == "Login Succeeded!\n"
        assert (auth_file.stat().st_mode & 0o777) == 0o600
        assert host in json.loads(auth_file.read_text())["auths"]
        assert rl.ok("login", "--get-login", host).stdout == f"{user_name}\n"

        assert other.ok("pull", "-q", INSECURE, dest).stdout == f"{image_archives.busybox.id}\n"
    finally:
        out = rl("logout", host)
    assert out.stdout == f"Removed login credentials for {host}\n", out
    assert host not in json.loads(auth_file.read_text())["auths"]
    again = rl("logout", host)
    assert again.returncode == 125 and f"not logged into {host}" in again.stderr
    assert rl("login", "--get-login", host).returncode == 125


def test_tls_with_certs_d(rl: Rl, tls_registry: Registry, image_archives: ArchiveSet) -> None:
    host = tls_registry.host
    rl.ok("load", "-i", str(image_archives.docker_archive))
    dest = f"{host}/tls/busybox:latest"
    result = rl("push", BUSYBOX, dest)
    assert result.returncode == 125
    assert f".config/containers/certs.d/{host}/ca.crt" in result.stderr, result
    tls_registry.install_ca()
    rl.ok("push", BUSYBOX, dest)
    other = fresh(rl, "tlspull")
    assert other.ok("pull", "-q", dest).stdout == f"{image_archives.busybox.id}\n"
    tls_registry.remove_ca()
    other2 = fresh(rl, "tlspull2")
    failed = other2("pull", dest)
    assert failed.returncode == 125
    assert "certificate verification failed" in failed.stderr
    assert f"~/.config/containers/certs.d/{host}/ca.crt" in failed.stderr
    assert other2.ok("pull", "-q", "--tls-verify=false", dest).stdout.strip() == (
        image_archives.busybox.id
    )
    # --cert-dir names the directory instead of certs.d
    assert tls_registry.ca is not None
    cert_dir = rl.root.parent / "certs"
    rl.user.run(["install", "-D", "-m", "0644", str(tls_registry.ca), str(cert_dir / "ca.crt")])
    other3 = fresh(rl, "tlspull3")
    by_dir = other3.ok("pull", "-q", "--cert-dir", str(cert_dir), dest)
    assert by_dir.stdout.strip() == image_archives.busybox.id


def test_client_certificate_from_certs_d(
    rl: Rl, mtls_registry: Registry, image_archives: ArchiveSet
) -> None:
    host = mtls_registry.host
    rl.ok("load", "-i", str(image_archives.docker_archive))
    mtls_registry.install_ca()
    dest = f"{host}/mtls/busybox:latest"
    refused = rl("push", BUSYBOX, dest)
    assert refused.returncode == 125
    hint = f"client.cert and client.key in ~/.config/containers/certs.d/{host}/"
    assert hint in refused.stderr, refused
    mtls_registry.install_client_cert()
    rl.ok("push", BUSYBOX, dest)
    other = fresh(rl, "mtls")
    assert other.ok("pull", "-q", dest).stdout == f"{image_archives.busybox.id}\n"


# --- images made by hand: a multi-platform index, images sharing layers -------------------


def small_image(marker: str, *, arch: str = "", variant: str = "", base: str = "") -> BuiltImage:
    layers = []
    if base:
        layers.append(layer([file(f"base/{base}", base * 2000)], "gzip"))
    layers.append(layer([file("marker", marker)], "gzip"))
    spec = ImageSpec(layers=tuple(layers), architecture=arch, config={"Cmd": ["/marker"]})
    built = build_image(spec)
    if variant:  # the config carries the variant too, as buildkit writes it
        config = built.config
        config["variant"] = variant
        built = testimages.assemble_image(
            ImageSpec(layers=(), architecture=arch), list(built.layers)
        )
        config_bytes = json.dumps(config).encode()
        manifest = json.loads(built.manifest_bytes)
        manifest["config"]["digest"] = testimages.sha256(config_bytes)
        manifest["config"]["size"] = len(config_bytes)
        built = BuiltImage(built.spec, built.layers, config_bytes, json.dumps(manifest).encode())
    return built


def push_built(registry: Registry, repo: str, image: BuiltImage, tag: str | None) -> str:
    for built in image.layers:
        registry.push_blob(repo, built.blob)
    registry.push_blob(repo, image.config_bytes)
    manifest = json.loads(image.manifest_bytes)
    reference = tag or testimages.sha256(image.manifest_bytes)
    return registry.push_manifest(repo, reference, manifest, image.manifest_bytes)


def test_multi_platform_index(rl: Rl, registry: Registry) -> None:
    platforms = [("amd64", ""), ("arm64", "v8"), ("arm", "v7")]
    entries = []
    images = {}
    for arch, variant in platforms:
        image = small_image(f"{arch}{variant}", arch=arch, variant=variant)
        digest = push_built(registry, "multi/app", image, None)
        platform: dict[str, str] = {"os": "linux", "architecture": arch}
        if variant:
            platform["variant"] = variant
        entries.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": len(image.manifest_bytes),
                "platform": platform,
            }
        )
        images[(arch, variant)] = image
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }
    registry.push_manifest("multi/app", "latest", index)
    ref = f"{registry.host}/multi/app:latest"
    for (arch, variant), image in images.items():
        wanted = f"linux/{arch}/{variant}" if variant else f"linux/{arch}"
        store = fresh(rl, f"multi-{arch}")
        out = store.ok("pull", "-q", INSECURE, "--platform", wanted, ref)
        assert out.stdout == f"{image.id}\n", wanted
    arm = fresh(rl, "multi-arch-flag")
    got = arm.ok("pull", "-q", INSECURE, "--arch", "arm", "--variant", "v7", ref)
    assert got.stdout == f"{images[('arm', 'v7')].id}\n"
    missing = rl("pull", INSECURE, "--platform", "linux/s390x", ref)
    assert missing.returncode == 125
    assert "linux/amd64, linux/arm/v7, linux/arm64/v8" in missing.stderr, missing
    assert rl.ok("images", "-q").stdout == ""


def test_concurrent_pulls_share_layers(rl: Rl, registry: Registry) -> None:
    refs = []
    images = []
    for number in range(5):
        image = small_image(f"image {number}", base="shared")
        push_built(registry, "shared/app", image, f"v{number}")
        refs.append(f"{registry.host}/shared/app:v{number}")
        images.append(image)
    rl.ok("images")  # creates the store
    procs = [
        subprocess.Popen(
            rl.user.argv(
                ["rl", "--root", str(rl.root), "pull", "-q", INSECURE, ref], rl.user.env()
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for ref in refs
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err), image in zip(procs, outputs, images, strict=True):
        assert proc.returncode == 0, err.decode()
        assert out.decode() == f"{image.id}\n"
    diff_ids = {d for image in images for d in image.diff_ids}
    assert len(diff_ids) == 6  # one shared base layer, five markers
    assert sorted(os.listdir(rl.root / "layers")) == sorted(d[7:] for d in diff_ids)
    assert len(rl.ok("images", "-q").stdout.split()) == 5
    assert os.listdir(rl.root / "tmp") == []
    # every tag at once, and several images in one command
    everything = fresh(rl, "all-tags")
    pulled = everything.ok("pull", "-q", "--all-tags", INSECURE, f"{registry.host}/shared/app")
    assert sorted(pulled.stdout.split()) == sorted(image.id for image in images)
    tagged = everything("pull", "-a", INSECURE, refs[0])
    assert tagged.returncode == 125 and "tag can't be used with --all-tags" in tagged.stderr
    two = fresh(rl, "two").ok("pull", "-q", INSECURE, refs[0], refs[1])
    assert two.stdout.split() == [images[0].id, images[1].id]


# --- bearer tokens, retries, resumed and corrupt downloads (the fake registry) ----------------


def random_layer_image(marker: str) -> BuiltImage:
    """Two gzip layers of incompressible data (so a cut download is really half done)."""
    layers = (
        layer([file("a", os.urandom(300_000))], "gzip"),
        layer([file("b", os.urandom(200_000)), file("marker", marker)], "gzip"),
    )
    return build_image(ImageSpec(layers=layers))


def test_bearer_login_retry_and_resume(rl: Rl, fake_registry: FakeRegistry, workdir: Path) -> None:
    fake = fake_registry
    image = random_layer_image("bearer")
    fake.add_image("team/app", "latest", image)
    first, second = image.layer_digests
    fake.faults = {first: ["503", "503"], second: ["cut"]}
    ref = f"{fake.host}/team/app:latest"
    authfile = str(workdir / "auth.json")

    denied = rl("pull", INSECURE, "--authfile", authfile, ref)
    assert denied.returncode == 125
    assert f"rl login {fake.host}" in denied.stderr, denied

    wrong = rl(
        "login", INSECURE, "--authfile", authfile, "-u", fake.username, "-p", "nope", fake.host
    )
    assert wrong.returncode == 125 and "invalid username/password" in wrong.stderr, wrong
    rl.ok(
        "login",
        INSECURE,
        "--authfile",
        authfile,
        "-u",
        fake.username,
        "-p",
        fake.password,
        fake.host,
    )
    assert rl.ok("login", "--authfile", authfile, "--get-login", fake.host).stdout == "tokenuser\n"

    fake.log.clear()
    pulled = rl.ok("pull", INSECURE, "--authfile", authfile, ref)
    assert pulled.stdout == f"{image.id}\n"
    blob_gets = [(path, headers) for method, path, headers in fake.log if first[7:] in path]
    assert len(blob_gets) == 3  # two 503s (Retry-After: 0), then the blob
    resumed = [h.get("Range") for m, p, h in fake.log if second[7:] in p]
    assert resumed[0] is None and resumed[1] is not None and resumed[1] != "bytes=0-", resumed
    token_requests = [h for m, p, h in fake.log if p.startswith("/token")]
    assert token_requests and all(
        h.get("Authorization", "").startswith("Basic ") for h in token_requests
    )
    assert inspect(rl, ref)["RootFS"]["Layers"] == image.diff_ids


def test_corrupt_blob_never_enters_the_store(rl: Rl, fake_registry: FakeRegistry) -> None:
    fake = fake_registry
    image = random_layer_image("corrupt")
    fake.add_image("team/bad", "latest", image)
    fake.faults = {image.layer_digests[1]: ["corrupt"] * 10}
    rl.ok("images")
    before = store_files(rl)
    creds = f"{fake.username}:{fake.password}"
    result = rl("pull", INSECURE, "--creds", creds, f"{fake.host}/team/bad:latest")
    assert result.returncode == 125
    assert "digest mismatch" in result.stderr, result
    assert store_files(rl) == before
    assert rl.ok("images", "-q").stdout == ""


def test_push_chunked_v2s2_and_cross_repo_mount(
    rl: Rl, registry: Registry, image_archives: ArchiveSet
) -> None:
    busybox = image_archives.busybox
    rl.ok("load", "-i", str(image_archives.docker_archive))
    first = f"{registry.host}/chunked/one:latest"
    chunked = rl.user.run(
        ["rl", "--root", str(rl.root), "--log-level", "debug", "push", INSECURE, BUSYBOX, first],
        env={"RL_PUSH_CHUNK_SIZE": "65536"},
    )
    assert chunked.returncode == 0, chunked
    assert "chunks" in chunked.stderr, chunked
    rl.ok("tag", BUSYBOX, first)
    # another repository on the same registry: the layers are mounted, not uploaded
    second = f"{registry.host}/chunked/two:latest"
    mounted = rl.ok("--log-level", "debug", "push", INSECURE, first, second)
    assert mounted.stderr.count("mounted from chunked/one") == len(busybox.layers) + 1, mounted
    # Docker's format: plain layers are gzip-compressed on the way; the image ID is unchanged
    docker = f"{registry.host}/chunked/docker:latest"
    rl.ok("push", INSECURE, "--format", "v2s2", BUSYBOX, docker)
    with registry.http() as client:
        got = client.get(
            "/v2/chunked/docker/manifests/latest",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
    manifest = got.json()
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    }
    for name in (first, second, docker):
        store = fresh(rl, "chunk-" + name.rsplit("/", 1)[1].split(":")[0])
        assert store.ok("pull", "-q", INSECURE, name).stdout == f"{busybox.id}\n"
        assert inspect(store, name)["RootFS"]["Layers"] == busybox.diff_ids


def test_registries_conf_insecure_and_short_names(
    rl: Rl, registry: Registry, image_archives: ArchiveSet, workdir: Path
) -> None:
    push_loaded_busybox(rl, registry, image_archives, "conf/busybox:1")
    conf = workdir / "registries.conf"
    conf.write_text(
        f'unqualified-search-registries = ["{registry.host}"]\n'
        f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n'
        f'[aliases]\n"mybox" = "{registry.host}/conf/busybox"\n'
    )
    env = {"CONTAINERS_REGISTRIES_CONF": str(conf)}
    other = fresh(rl, "conf")
    result = other("pull", "conf/busybox:1", env=env)  # no --tls-verify=false needed
    assert result.returncode == 0, result
    assert result.stdout == f"{image_archives.busybox.id}\n"
    assert f"Trying to pull {registry.host}/conf/busybox:1..." in result.stderr
    aliased = other("pull", "mybox:1", env=env)
    assert aliased.returncode == 0, aliased
    assert f'Resolved "mybox" as an alias ({conf})' in aliased.stderr
    # --tls-verify on the command line wins over registries.conf
    refused = other("pull", "--tls-verify=true", "conf/busybox:1", env=env)
    assert refused.returncode == 125 and "--tls-verify=false" in refused.stderr


def test_download_starts_over_when_range_is_ignored(rl: Rl, fake_registry: FakeRegistry) -> None:
    fake = fake_registry
    fake.honour_range = False
    image = random_layer_image("no-range")
    fake.add_image("team/norange", "latest", image)
    first, second = image.layer_digests
    fake.faults = {first: ["429"], second: ["cut", "cut"]}
    creds = f"{fake.username}:{fake.password}"
    pulled = rl.ok("pull", "-q", INSECURE, "--creds", creds, f"{fake.host}/team/norange:latest")
    assert pulled.stdout == f"{image.id}\n"
    asked = [h.get("Range") for m, p, h in fake.log if second[7:] in p]
    assert len(asked) == 3 and asked[0] is None and asked[1] and asked[2], asked


def test_same_layer_compressed_differently(rl: Rl, registry: Registry, workdir: Path) -> None:
    """A layer the store has unpacked is not unpacked again when another image brings it as
    another blob; that blob is still stored, so the image can be saved and pushed."""
    entries = [file("data", os.urandom(50_000))]
    plain = build_image(ImageSpec(layers=(layer(entries),), config={"Cmd": ["plain"]}))
    packed = build_image(ImageSpec(layers=(layer(entries, "gzip"),), config={"Cmd": ["gz"]}))
    assert plain.diff_ids == packed.diff_ids and plain.layer_digests != packed.layer_digests
    push_built(registry, "recompressed/app", plain, "plain")
    push_built(registry, "recompressed/app", packed, "gzip")
    host = registry.host
    rl.ok("pull", "-q", INSECURE, f"{host}/recompressed/app:plain")
    [layer_dir] = os.listdir(rl.root / "layers")
    inode = os.stat(rl.root / "layers" / layer_dir).st_ino
    assert rl.ok("pull", "-q", INSECURE, f"{host}/recompressed/app:gzip").stdout == (
        f"{packed.id}\n"
    )
    assert os.listdir(rl.root / "layers") == [layer_dir]
    assert os.stat(rl.root / "layers" / layer_dir).st_ino == inode  # not unpacked again
    assert (rl.root / "blobs/sha256" / packed.layer_digests[0][7:]).is_file()
    rl.ok("save", "-o", str(workdir / "saved.tar"), f"{host}/recompressed/app:gzip")
    rl.ok("push", INSECURE, f"{host}/recompressed/app:gzip", f"{host}/recompressed/copy:1")


def test_run_pulls_by_policy(
    rl: Rl, registry: Registry, image_archives: ArchiveSet, workdir: Path
) -> None:
    """rl run --pull=missing (default) pulls what the store lacks, never refuses to, always pulls
    again, newer falls back to the local image when the registry cannot answer."""
    push_loaded_busybox(rl, registry, image_archives, "runpull/busybox:1")
    conf = workdir / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    env = {"CONTAINERS_REGISTRIES_CONF": str(conf)}
    ref = f"{registry.host}/runpull/busybox:1"
    other = fresh(rl, "runpull")

    never = other("run", "--rm", "--pull=never", ref, "true", env=env)
    assert never.returncode == 125 and "image not known" in never.stderr, never
    first = other("run", "--rm", ref, "echo", "ran", env=env)
    assert first.returncode == 0 and first.stdout == "ran\n", first
    assert "Writing manifest to image destination" in first.stderr
    again = other("run", "--rm", ref, "true", env=env)
    assert again.returncode == 0 and "Writing manifest" not in again.stderr, again
    always = other("run", "--rm", "--pull=always", ref, "true", env=env)
    assert always.returncode == 0 and "Trying to pull" in always.stderr, always

    gone = "127.0.0.1:1/runpull/busybox:1"  # nothing listens there
    other.ok("tag", ref, gone)
    newer = other("run", "--rm", "--pull=newer", gone, "echo", "local", env=env)
    assert newer.returncode == 0 and newer.stdout == "local\n", newer
    refused = other("run", "--rm", "--pull=always", gone, "true", env=env)
    assert refused.returncode == 125, refused
    assert refused.stderr.splitlines()[-1].startswith("Error: 127.0.0.1:1: connection refused")
    assert rl("run", "--pull=sometimes", ref, "true").returncode == 125


# --- zstd layers ------------------------------------------------------------------------------

OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def zstd_image(payload: bytes) -> BuiltImage:
    """busybox (gzip) under a zstd layer of two frames (as zstd:chunked writes several)."""
    import zstandard

    base = testimages.build_layer(layer(testimages.busybox_base_entries(), "gzip"))
    tar = testimages.layer_tar([file("data.bin", payload), file("hello", "zstd ok\n")])
    compressor = zstandard.ZstdCompressor(level=3)
    half = len(tar) // 2
    blob = compressor.compress(tar[:half]) + compressor.compress(tar[half:])
    zstd_layer = testimages.BuiltLayer(blob, tar, "none")
    image = testimages.assemble_image(
        ImageSpec(layers=(), config={"Cmd": ["/bin/sh"]}), [base, zstd_layer]
    )
    manifest = json.loads(image.manifest_bytes)
    manifest["layers"][1]["mediaType"] = OCI_LAYER_ZSTD
    return BuiltImage(image.spec, image.layers, image.config_bytes, json.dumps(manifest).encode())


def test_pull_zstd_layer(rl: Rl, registry: Registry) -> None:
    payload = os.urandom(200_000)
    image = zstd_image(payload)
    zstd_digest = image.layer_digests[1]
    manifest_digest = push_built(registry, "zstd/app", image, "latest")
    ref = f"{registry.host}/zstd/app:latest"
    pulled = rl.ok("pull", INSECURE, ref)
    assert pulled.stdout == f"{image.id}\n"
    assert f"Copying blob {zstd_digest}" in pulled.stderr
    found = inspect(rl, ref)
    assert found["RootFS"]["Layers"] == image.diff_ids  # diff-ids checked after decompression
    assert found["Digest"] == manifest_digest
    assert (rl.root / "blobs/sha256" / zstd_digest[7:]).read_bytes() == image.layers[1].blob
    assert rl.ok("run", "--rm", ref, "cat", "/hello").stdout == "zstd ok\n"
    sums = rl.ok("run", "--rm", ref, "sha256sum", "/data.bin").stdout
    assert sums.split()[0] == testimages.sha256(payload)[7:]
    # by digest, into another store
    other = fresh(rl, "zstd-digest")
    by_digest = f"{registry.host}/zstd/app@{manifest_digest}"
    assert other.ok("pull", "-q", INSECURE, by_digest).stdout == f"{image.id}\n"
    # pushed on as OCI, the layer stays zstd
    rl.ok("push", INSECURE, ref, f"{registry.host}/zstd/copy:1")
    with registry.http() as client:
        got = client.get(
            "/v2/zstd/copy/manifests/1",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        ).json()
    assert [entry["mediaType"] for entry in got["layers"]][1] == OCI_LAYER_ZSTD
    assert got["layers"][1]["digest"] == zstd_digest


def test_zstd_layer_with_wrong_diff_id_is_refused(rl: Rl, registry: Registry) -> None:
    """The blob matches its digest but decompresses to another tar than the config says."""
    import zstandard

    image = zstd_image(b"x" * 1000)
    wrong_tar = testimages.layer_tar([file("hello", "something else\n")])
    blob = zstandard.ZstdCompressor().compress(wrong_tar)
    forged_layer = testimages.BuiltLayer(blob, image.layers[1].tar, "none")
    manifest = json.loads(image.manifest_bytes)
    manifest["layers"][1].update(digest=testimages.sha256(blob), size=len(blob))
    forged = BuiltImage(
        image.spec,
        (image.layers[0], forged_layer),
        image.config_bytes,
        json.dumps(manifest).encode(),
    )
    push_built(registry, "zstd/forged", forged, "latest")
    rl.ok("images")
    before = store_files(rl)
    result = rl("pull", INSECURE, f"{registry.host}/zstd/forged:latest")
    assert result.returncode == 125, result
    assert "does not belong to this image" in result.stderr, result
    assert store_files(rl) == before


# --- rl manifest inspect ----------------------------------------------------------------------


def go_indent(data: bytes) -> str:
    """What podman prints: json.Indent with four spaces (the test's own version: Python's
    json module, which matches for documents without escapes or float spellings)."""
    return json.dumps(json.loads(data), indent=4) + "\n"


def test_manifest_inspect(rl: Rl, registry: Registry, auth_registry: Registry) -> None:
    single = small_image("inspect-single")
    digest = push_built(registry, "inspect/single", single, "v1")
    host = registry.host
    shown = rl.ok("manifest", "inspect", INSECURE, f"{host}/inspect/single:v1")
    assert shown.stdout == go_indent(single.manifest_bytes)
    assert shown.stdout.startswith('{\n    "config": {\n        "digest": ')  # key order kept
    by_digest = rl.ok("manifest", "inspect", INSECURE, f"{host}/inspect/single@{digest}")
    assert by_digest.stdout == shown.stdout

    entries = []
    for arch, variant in [("amd64", ""), ("arm64", "v8"), ("arm", "v7")]:
        image = small_image(f"inspect-{arch}", arch=arch, variant=variant)
        platform = {
            "os": "linux",
            "architecture": arch,
            **({"variant": variant} if variant else {}),
        }
        entries.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": push_built(registry, "inspect/multi", image, None),
                "size": len(image.manifest_bytes),
                "platform": platform,
            }
        )
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }
    index_bytes = json.dumps(index, separators=(",", ":")).encode()
    registry.push_manifest("inspect/multi", "latest", index, index_bytes)
    listed = rl.ok("manifest", "inspect", "--tls-verify=false", f"{host}/inspect/multi")
    assert listed.stdout == go_indent(index_bytes)
    assert json.loads(listed.stdout) == index
    assert listed.stderr == ""
    assert rl.ok("images", "-q").stdout == ""  # nothing was pulled

    missing = rl("manifest", "inspect", INSECURE, f"{host}/inspect/nothere:latest")
    assert missing.returncode == 125 and missing.stdout == ""
    assert missing.stderr.startswith("Error: ") and "manifest unknown" in missing.stderr
    plain = rl("manifest", "inspect", f"{host}/inspect/single:v1")
    assert plain.returncode == 125 and "--tls-verify=false" in plain.stderr, plain

    # credentials: --creds, or an auth file
    user_name, password = auth_registry.credentials or ("", "")
    private = f"{auth_registry.host}/private/inspect:1"
    push_built(auth_registry, "private/inspect", single, "1")
    denied = rl("manifest", "inspect", INSECURE, private)
    assert denied.returncode == 125 and f"rl login {auth_registry.host}" in denied.stderr
    creds = rl.ok("manifest", "inspect", INSECURE, "--creds", f"{user_name}:{password}", private)
    assert creds.stdout == go_indent(single.manifest_bytes)
    authfile = rl.root.parent / "inspect-auth.json"
    rl.ok("login", INSECURE, "--authfile", str(authfile), "-u", user_name, "-p", password,
          auth_registry.host)  # fmt: skip
    by_file = rl.ok("manifest", "inspect", INSECURE, "--authfile", str(authfile), private)
    assert by_file.stdout == creds.stdout


# --- on a terminal: progress bars and the short-name prompt -----------------------------------


def run_in_pty(
    rl: Rl,
    *args: str,
    env: dict[str, str] | None = None,
    answers: list[tuple[bytes, bytes]] | None = None,
    timeout: float = 120,
) -> tuple[int, str]:
    """Run rl with a terminal (a pty, 120x40) as stdin, stdout and stderr; write each answer's
    keys once its prompt text has appeared. Returns the exit code and everything shown."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    from tests.harness import rl_binary

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    argv = rl.user.argv([rl_binary(), "--root", str(rl.root), *args], rl.user.env(env))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    pending = list(answers or [])
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has gone
                break
            if not data:
                break
            shown += data
            while pending and pending[0][0] in shown:
                os.write(master, pending.pop(0)[1])
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, shown.decode(errors="replace")


def test_progress_bars_on_a_terminal(rl: Rl, registry: Registry) -> None:
    image = random_layer_image("bars")
    push_built(registry, "bars/app", image, "latest")
    ref = f"{registry.host}/bars/app:latest"
    code, shown = run_in_pty(rl, "pull", INSECURE, ref)
    assert code == 0, shown
    for digest in image.layer_digests:
        short = digest[7:19]
        # a bar with the layer's size, the speed and the time left ...
        bar = rf"Copying blob {short} \[[ =]+\] [\d.]+k?B / [\d.]+kB \| [\d.?]+[kM]?B/s \| ETA "
        assert re.search(bar, shown), shown
        # ... replaced in place by the final line
        assert f"Copying blob {short} done" in shown
    assert "\x1b[J" in shown  # redrawn in place
    assert f"Copying config {image.id[:10]} done" in shown
    assert shown.rstrip().endswith(image.id)
    # -q: nothing but the ID, even on a terminal
    again = fresh(rl, "bars-quiet")
    code, quiet = run_in_pty(again, "pull", "-q", INSECURE, ref)
    assert code == 0 and quiet.strip() == image.id, quiet


def test_short_name_prompt_on_a_terminal(
    rl: Rl, registry: Registry, image_archives: ArchiveSet, workdir: Path
) -> None:
    push_loaded_busybox(rl, registry, image_archives, "prompt/busybox:1")
    conf = workdir / "registries.conf"
    unreachable = "127.0.0.1:1"
    conf.write_text(
        f'unqualified-search-registries = ["{unreachable}", "{registry.host}"]\n'
        'short-name-mode = "enforcing"\n'
        f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n'
    )
    env = {
        "CONTAINERS_REGISTRIES_CONF": str(conf),
        "XDG_CACHE_HOME": str(workdir / "cache"),
    }
    other = fresh(rl, "prompt")
    # without a terminal: the clear error, listing the candidates
    piped = other("pull", "prompt/busybox:1", env=env)
    assert piped.returncode == 125
    assert "cannot prompt without a TTY" in piped.stderr
    assert f"{unreachable}/prompt/busybox:1, {registry.host}/prompt/busybox:1" in piped.stderr

    # Ctrl-C at the prompt: nothing is pulled
    code, shown = run_in_pty(
        other, "pull", "prompt/busybox:1", env=env, answers=[(b"select an image", b"\x03")]
    )
    assert code == 125 and "no image selected" in shown, shown
    assert not (workdir / "cache/containers/short-name-aliases.conf").exists()

    # down to the second registry, Enter
    code, shown = run_in_pty(
        other, "pull", "prompt/busybox:1", env=env, answers=[(b"select an image", b"\x1b[B\r")]
    )
    assert code == 0, shown
    assert "? Please select an image: " in shown
    assert f"  ▸ {unreachable}/prompt/busybox:1" in shown  # the first is marked at first
    assert f"✔ {registry.host}/prompt/busybox:1" in shown
    assert f"Trying to pull {registry.host}/prompt/busybox:1..." in shown
    assert f"Trying to pull {unreachable}" not in shown
    assert shown.rstrip().endswith(image_archives.busybox.id)
    # the answer is remembered as an alias, as podman does: no prompt, no TTY needed
    cache = workdir / "cache/containers/short-name-aliases.conf"
    assert f'"prompt/busybox" = "{registry.host}/prompt/busybox"' in cache.read_text()
    again = other("pull", "-q", "prompt/busybox:1", env=env)
    assert again.returncode == 0 and again.stdout == f"{image_archives.busybox.id}\n", again
