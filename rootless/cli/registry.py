"""`rl pull`, `rl push`, `rl login`, `rl logout` (and their `rl image …` twins), and
`rl manifest inspect` of a remote manifest or index.

Only the standard library is imported here; trio and httpx load when one of these runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rootless.errors import RlError

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup
    from rootless.registry.auth import Credentials


def _tls_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}: use true or false")


def _add_common(parser: argparse.ArgumentParser, *, creds: bool = True) -> None:
    parser.add_argument(
        "--authfile", metavar="PATH", help="Path of the authentication file (default: auth.json)"
    )
    if creds:
        parser.add_argument(
            "--creds",
            metavar="USER[:PASSWORD]",
            help="Credentials to use for the registry instead of the auth file",
        )
    parser.add_argument(
        "--tls-verify",
        nargs="?",
        const=True,
        default=None,
        type=_tls_bool,
        metavar="BOOL",
        help="Require HTTPS and verify certificates (--tls-verify=false allows plain HTTP)",
    )
    parser.add_argument(
        "--cert-dir",
        metavar="PATH",
        help="Directory with the registry's TLS certificates (*.crt, *.cert, *.key) "
        "instead of certs.d",
    )


def register(commands: CommandGroup) -> None:
    image = commands.group("image", "Manage images")
    for group in (commands, image):
        pull = group.command("pull", "Pull an image from a registry")
        pull.add_argument("-q", "--quiet", action="store_true", help="Print only the image ID")
        pull.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="Platform to pull")
        pull.add_argument("--arch", help="Architecture to pull instead of the host's")
        pull.add_argument("--os", help="Operating system to pull instead of linux")
        pull.add_argument("--variant", help="Architecture variant (e.g. v7) to pull")
        pull.add_argument(
            "-a", "--all-tags", action="store_true", help="Pull every tag of the repository"
        )
        pull.add_argument(
            "--disable-content-trust", action="store_true", help=argparse.SUPPRESS
        )  # docker's flag: accepted and ignored, as podman does
        _add_common(pull)
        pull.add_argument("images", nargs="+", metavar="IMAGE")
        pull.set_defaults(func=_run_pull)

        push = group.command("push", "Push an image to a registry")
        push.add_argument("-q", "--quiet", action="store_true", help="Print no progress")
        push.add_argument(
            "-f", "--format", choices=["oci", "v2s2"], help="Manifest type of the destination"
        )
        push.add_argument(
            "--digestfile", metavar="PATH", help="Write the digest of the pushed manifest to PATH"
        )
        push.add_argument("--disable-content-trust", action="store_true", help=argparse.SUPPRESS)
        push.add_argument(
            "--remove-signatures",
            action="store_true",
            help="Discard any signatures (rl stores none)",
        )
        _add_common(push)
        push.add_argument("image", metavar="IMAGE")
        push.add_argument("destination", nargs="?", metavar="DESTINATION")
        push.set_defaults(func=_run_push)

    login = commands.command("login", "Log in to a container registry")
    login.add_argument("-u", "--username", help="Username for the registry")
    login.add_argument("-p", "--password", help="Password for the registry")
    login.add_argument(
        "--password-stdin", action="store_true", help="Read the password from standard input"
    )
    login.add_argument(
        "--get-login", action="store_true", help="Print the user logged in to the registry"
    )
    login.add_argument(
        "-v", "--verbose", action="store_true", help="Print the auth file that was used"
    )
    _add_common(login, creds=False)
    login.add_argument("registry", nargs="?", metavar="REGISTRY")
    login.set_defaults(func=_run_login)

    manifest = commands.group("manifest", "Manipulate manifest lists and image indexes")
    inspect = manifest.command(
        "inspect",
        "Display the contents of a manifest list or image index",
        description="Display the manifest or image index of IMAGE as the registry serves it.",
    )
    _add_common(inspect)
    inspect.add_argument("image", metavar="IMAGE")
    inspect.set_defaults(func=_run_manifest_inspect)

    logout = commands.command("logout", "Log out of a container registry")
    logout.add_argument("-a", "--all", action="store_true", help="Remove all credentials")
    logout.add_argument("--authfile", metavar="PATH", help="Path of the authentication file")
    logout.add_argument("registry", nargs="?", metavar="REGISTRY")
    logout.set_defaults(func=_run_logout)


def parse_creds(text: str | None) -> Credentials | None:
    from rootless.registry.auth import Credentials

    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not user:
        raise RlError("--creds: the username must not be empty (USER[:PASSWORD])")
    if not sep:
        import getpass

        password = getpass.getpass("Password: ")
    return Credentials(user, password)


def _run_pull(args: argparse.Namespace) -> int:
    from rootless.registry.manifests import Platform, host_platform, parse_platform
    from rootless.registry.pull import PullOptions, pull, pull_all_tags

    platform = None
    if args.platform:
        if args.arch or args.os or args.variant:
            raise RlError("--platform cannot be combined with --arch, --os or --variant")
        platform = parse_platform(args.platform)
    elif args.arch or args.os or args.variant:
        host = host_platform()
        arch = args.arch or host.architecture
        default_variant = "" if args.arch else host.variant
        variant = args.variant if args.variant is not None else default_variant
        platform = Platform(args.os or "linux", arch, variant)
    options = PullOptions(
        platform=platform,
        verify_tls=args.tls_verify,
        authfile=args.authfile,
        credentials=parse_creds(args.creds),
        quiet=args.quiet,
        cert_dir=Path(args.cert_dir) if args.cert_dir else None,
    )
    for name in args.images:
        if args.all_tags:
            for image_id in pull_all_tags(name, options):
                print(image_id, flush=True)
        else:
            print(pull(name, options), flush=True)
    from rootless.cli.quickexit import leave

    leave(0)  # skips the teardown of trio, httpx & co. (see there)


def _run_manifest_inspect(args: argparse.Namespace) -> int:
    from rootless.registry.pull import PullOptions
    from rootless.registry.remote import inspect_manifest

    options = PullOptions(
        verify_tls=args.tls_verify,
        authfile=args.authfile,
        credentials=parse_creds(args.creds),
        cert_dir=Path(args.cert_dir) if args.cert_dir else None,
    )
    print(inspect_manifest(args.image, options), flush=True)
    return 0


def _run_push(args: argparse.Namespace) -> int:
    from rootless.registry.push import PushOptions, push

    options = PushOptions(
        format=args.format,
        verify_tls=args.tls_verify,
        authfile=args.authfile,
        credentials=parse_creds(args.creds),
        quiet=args.quiet,
        cert_dir=Path(args.cert_dir) if args.cert_dir else None,
    )
    digest = push(args.image, args.destination, options)
    if args.digestfile:
        try:
            Path(args.digestfile).write_text(digest)
        except OSError as exc:
            raise RlError(f"writing the digest file {args.digestfile}: {exc.strerror}") from None
    return 0


def _login_key(args: argparse.Namespace, verb: str) -> str:
    from rootless.registry.authfile import normalize_login_key

    registry = args.registry
    if not registry:
        from rootless.registry.shortnames import load_registries_config

        search = load_registries_config().unqualified_search_registries
        if not search:
            raise RlError(f"please provide a registry: rl {verb} REGISTRY")
        registry = search[0]
    return normalize_login_key(registry)


def _run_login(args: argparse.Namespace) -> int:
    from rootless.registry.auth import Credentials
    from rootless.registry.authfile import (
        add_credentials,
        default_paths,
        find_credentials,
        lookup_credentials,
        read_auth_file,
        write_auth_file,
    )

    key = _login_key(args, "login")
    host = key.partition("/")[0]
    if args.get_login:
        found = lookup_credentials(key, args.authfile)
        if found is None or not found.username:
            raise RlError(f"not logged into {key}")
        print(found.username)
        return 0
    if args.password_stdin and args.password is not None:
        raise RlError("can't specify both --password-stdin and --password")
    if args.password_stdin and not args.username:
        raise RlError("must provide --username with --password-stdin")
    target = default_paths(args.authfile)[0].path
    if args.username is None and args.password is None and not args.password_stdin:
        existing_text = read_auth_file(target)
        existing = (
            find_credentials(existing_text, key, where=str(target)) if existing_text else None
        )
        if existing is not None and existing.username:
            print(f"Authenticating with existing credentials for {key}")
            _verify_login(host, existing, args)
            print(f"Existing credentials are valid. Already logged in to {key}")
            return 0
    username = args.username or _prompt("Username: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif args.password is not None:
        password = args.password
    else:
        import getpass

        if not sys.stdin.isatty():
            raise RlError(
                "no password given and standard input is not a terminal: use -p or --password-stdin"
            )
        password = getpass.getpass("Password: ")
    if not username:
        raise RlError("the username must not be empty")
    if not password:
        raise RlError("the password must not be empty")
    credentials = Credentials(username, password)
    _verify_login(host, credentials, args)
    write_auth_file(target, add_credentials(read_auth_file(target), key, username, password))
    if args.verbose:
        print(f"Used: {target}")
    print("Login Succeeded!")
    return 0


def _prompt(text: str) -> str:
    if not sys.stdin.isatty():
        raise RlError("no username given and standard input is not a terminal: use -u USER")
    return input(text).strip()


def _verify_login(host: str, credentials: Credentials, args: argparse.Namespace) -> None:
    import rootless.registry.quickimport  # noqa: F401  # isort: skip  (before trio)
    import trio

    from rootless.registry.client import RegistryClient
    from rootless.registry.shortnames import is_insecure_registry, load_registries_config

    insecure = (
        is_insecure_registry(host, load_registries_config())
        if args.tls_verify is None
        else not args.tls_verify
    )
    cert_dir = Path(args.cert_dir) if args.cert_dir else None

    async def check() -> None:
        async with RegistryClient(
            host, credentials=credentials, insecure=insecure, cert_dir=cert_dir
        ) as client:
            await client.ping()
            response = await client.request("GET", "/v2/", [], retry=True)
            if response.status_code != 200:
                from rootless.registry.client import http_error

                raise http_error(f"logging into {host}", response, host, response.content)

    try:
        trio.run(check)
    except RlError as exc:
        if "invalid username/password" in exc.message:
            raise RlError(f'logging into "{host}": invalid username/password') from None
        raise


def _run_logout(args: argparse.Namespace) -> int:
    from rootless.registry.authfile import (
        default_paths,
        read_auth_file,
        remove_all_credentials,
        remove_credentials,
        write_auth_file,
    )

    target = default_paths(args.authfile)[0].path
    text = read_auth_file(target)
    if args.all:
        if args.registry:
            raise RlError("--all takes no REGISTRY argument")
        if text is not None:
            write_auth_file(target, remove_all_credentials(text))
        print("Removed login credentials for all registries")
        return 0
    key = _login_key(args, "logout")
    write_auth_file(target, remove_credentials(text, key))
    print(f"Removed login credentials for {key}")
    return 0
