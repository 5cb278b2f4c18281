"""rl pull / push / login / logout against a real registry (docker-registry) on 127.0.0.1."""

from __future__ import annotations

import json
import os
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
