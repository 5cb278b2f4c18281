"""Image commands: images, load, save, import, rmi, tag, untag, image inspect/exists/prune,
and the store's share of `system`: df and reset."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rootless.cli.main import CommandGroup
    from rootless.images.store import Image, ImageStore

Runner = Callable[[argparse.Namespace], int]


def register(commands: CommandGroup) -> None:
    image = commands.group("image", "Manage images")
    system = commands.group("system", "Manage rl")

    def both(
        name: str,
        summary: str,
        setup: Callable[[argparse.ArgumentParser], None],
        run: Runner,
        *,
        image_name: str | None = None,
        image_aliases: Sequence[str] = (),
    ) -> None:
        """`rl NAME` and `rl image NAME` (podman offers both)."""
        for group, cmd, aliases in (
            (commands, name, ()),
            (image, image_name or name, image_aliases),
        ):
            parser = group.command(cmd, summary, aliases=aliases)
            setup(parser)
            parser.set_defaults(func=run)

    both(
        "images",
        "List images in local storage",
        _images_flags,
        _run_images,
        image_name="list",
        image_aliases=["ls"],
    )
    both("load", "Load image(s) from a tar archive", _load_flags, _run_load)
    both("save", "Save image(s) to an archive", _save_flags, _run_save)
    both("import", "Import a tarball to create a filesystem image", _import_flags, _run_import)
    both(
        "rmi", "Remove one or more images from local storage", _rmi_flags, _run_rmi, image_name="rm"
    )
    both("tag", "Add an additional name to a local image", _tag_flags, _run_tag)
    both("untag", "Remove a name from a local image", _untag_flags, _run_untag)

    inspect = image.command("inspect", "Display the configuration of an image")
    inspect.add_argument("-f", "--format", help="Format the output using the given Go template")
    inspect.add_argument("images", nargs="+", metavar="IMAGE")
    inspect.set_defaults(func=_run_inspect)

    exists = image.command("exists", "Check if an image exists in local storage")
    exists.add_argument("image", metavar="IMAGE")
    exists.set_defaults(func=_run_exists)

    prune = image.command("prune", "Remove unused images")
    prune.add_argument(
        "-a",
        "--all",
        action="store_true",
        help="Remove all images not in use by containers, not just dangling ones",
    )
    prune.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    prune.set_defaults(func=_run_prune)

    df = system.command("df", "Show rl disk usage")
    df.add_argument("--format", help="Pretty-print images using a Go template (json supported)")
    df.set_defaults(func=_run_df)

    reset = system.command("reset", "Reset rl storage")
    reset.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    reset.set_defaults(func=_run_reset)


def _open() -> ImageStore:
    from rootless.images.store import ImageStore

    return ImageStore.open()


# --- Go-template-like formatting ------------------------------------------------------------------


def render(template: str, value: dict[str, Any]) -> str:
    """One `--format` line: Go-template fields of `value` (rootless.gotemplate)."""
    from rootless import gotemplate

    return gotemplate.render(template, value).removesuffix("\n")


def _print_formatted(
    template: str, rows: Sequence[dict[str, Any]], headers: dict[str, str]
) -> None:
    """`--format TEMPLATE`, with podman's `table ` prefix giving a header row and alignment."""
    if template.startswith("table"):
        from rootless.gotemplate import render_table

        body = template[len("table") :].strip() or "{{.ID}}"
        sys.stdout.write(render_table(body, rows, headers))
        return
    for row in rows:
        sys.stdout.write(render(template, row) + "\n")


# --- images ---------------------------------------------------------------------------------------


def _images_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-a",
        "--all",
        action="store_true",
        help="Show all images (default hides intermediate images)",
    )
    parser.add_argument("--digests", action="store_true", help="Show digests")
    parser.add_argument("--format", help="Change the output format to JSON or a Go template")
    parser.add_argument(
        "-n", "--noheading", action="store_true", help="Do not print column headings"
    )
    parser.add_argument("--no-trunc", action="store_true", help="Do not truncate output")
    parser.add_argument("-q", "--quiet", action="store_true", help="Display only image IDs")
    parser.add_argument(
        "image", nargs="?", metavar="IMAGE", help="Show only images matching this name"
    )


def _image_rows(images: Sequence[Image], no_trunc: bool) -> list[dict[str, Any]]:
    """One row per name (one `<none>` row for an unnamed image), podman's fields."""
    from rootless.cli.output import ago, human_size
    from rootless.images.reference import split_name

    rows = []
    for image in images:
        names: list[str | None] = list(image.names) or [None]
        for name in names:
            repo, tag = split_name(name) if name else ("<none>", "<none>")
            rows.append(
                {
                    "Repository": repo,
                    "Tag": tag,
                    "ID": f"sha256:{image.id}" if no_trunc else image.id[:12],
                    "Digest": image.digest,
                    "Created": ago(image.created),
                    "CreatedSince": ago(image.created),
                    "CreatedAt": _timestamp(image.created),
                    "Size": human_size(image.size),
                    "Names": image.names,
                    "Dangling": not image.names,
                }
            )
    return rows


def _timestamp(epoch: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(epoch))


def _filter_images(store: ImageStore, images: list[Image], query: str) -> list[Image]:
    """`rl images busybox`: the image with that ID, or the names in that repository (any tag
    unless the query has one), each image keeping only its matching names."""
    import copy

    from rootless.errors import RlError
    from rootless.images.reference import looks_like_id, matches, parse

    try:
        has_tag = parse(query).tag is not None
    except RlError:
        has_tag = True
    chosen = []
    for image in images:
        if looks_like_id(query) and image.id.startswith(query.removeprefix("sha256:")):
            chosen.append(image)
            continue
        names = [
            n for n in image.names if matches(query if has_tag else f"{query}:{parse(n).tag}", n)
        ]
        if names:
            shown = copy.copy(image)
            shown.names = names
            chosen.append(shown)
    return chosen


def _run_images(args: argparse.Namespace) -> int:
    from rootless.cli.output import print_json, table

    store = _open()
    images = store.images()
    if args.image:
        images = _filter_images(store, images, args.image)
    if args.quiet:
        seen: list[str] = []
        for image in images:
            shown = f"sha256:{image.id}" if args.no_trunc else image.id[:12]
            if shown not in seen:
                seen.append(shown)
        sys.stdout.write("".join(f"{s}\n" for s in seen))
        return 0
    if args.format == "json":
        print_json([_image_json(store, image) for image in images])
        return 0
    rows = _image_rows(images, args.no_trunc)
    if args.format:
        headers = {"ID": "IMAGE ID", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT"}
        template = args.format
        if args.noheading:
            template = template.removeprefix("table").strip()
        _print_formatted(template, rows, headers)
        return 0
    columns = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    keys = ["Repository", "Tag", "ID", "Created", "Size"]
    if args.digests:
        columns.insert(2, "DIGEST")
        keys.insert(2, "Digest")
    table(columns, [[row[k] for k in keys] for row in rows], header=not args.noheading)
    return 0


def _repo_digests(image: Image) -> list[str]:
    from rootless.images.reference import parse

    repos: list[str] = []
    for name in image.names:
        repo = parse(name).name
        if repo not in repos:
            repos.append(repo)
    return [f"{repo}@{image.digest}" for repo in repos]


def _image_json(store: ImageStore, image: Image) -> dict[str, Any]:
    """An entry of `images --format json`, in podman's shape."""
    labels = (image.config.get("config") or {}).get("Labels") or None
    entry: dict[str, Any] = {
        "Id": image.id,
        "ParentId": "",
        "RepoTags": image.names or None,
        "RepoDigests": _repo_digests(image),
        "Size": image.size,
        "SharedSize": 0,
        "VirtualSize": image.size,
        "Labels": labels,
        "Containers": 0,
    }
    if image.names:
        entry["Names"] = image.names
    else:
        entry["Dangling"] = True
    entry["Digest"] = image.digest
    if image.names_history:
        entry["History"] = image.names_history
    entry["Created"] = int(image.created)
    entry["CreatedAt"] = _rfc3339(image.created)
    return entry


def _rfc3339(epoch: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# --- inspect / exists -----------------------------------------------------------------------------


def inspect_image(store: ImageStore, image: Image) -> dict[str, Any]:
    """`rl image inspect` for one image, podman's JSON shape."""
    config = image.config
    history = config.get("history") or []
    comment = config.get("comment") or (history[-1].get("comment", "") if history else "")
    lowers = ":".join(str(store.layer_path(d)) for d in reversed(image.diff_ids))
    annotations: dict[str, Any] = {}
    try:
        manifest = json.loads(store.blob_path(image.digest).read_bytes())
        annotations = manifest.get("annotations") or {}
    except (OSError, ValueError):
        pass
    inner = config.get("config") or {}
    return {
        "Id": image.id,
        "Digest": image.digest,
        "RepoTags": image.names,
        "RepoDigests": _repo_digests(image),
        "Parent": "",
        "Comment": comment,
        "Created": config.get("created", ""),
        "Config": inner,
        "Version": config.get("docker_version", ""),
        "Author": config.get("author", ""),
        "Architecture": config.get("architecture", ""),
        "Os": config.get("os", ""),
        "Size": image.size,
        "VirtualSize": image.size,
        "GraphDriver": {"Name": "overlay", "Data": {"LowerDir": lowers}},
        "RootFS": {"Type": "layers", "Layers": image.diff_ids},
        "Labels": inner.get("Labels") or None,
        "Annotations": annotations,
        "ManifestType": image.manifest_type,
        "User": inner.get("User", ""),
        "History": history,
        "NamesHistory": image.names_history,
    }


def _run_inspect(args: argparse.Namespace) -> int:
    from rootless.cli.output import print_json
    from rootless.errors import RlError

    store = _open()
    results = []
    missing = []
    for name in args.images:
        try:
            results.append(inspect_image(store, store.resolve(name)))
        except RlError:
            missing.append(name)
    if args.format:
        for result in results:
            sys.stdout.write(render(args.format, result) + "\n")
    else:
        print_json(results)
    if missing:
        raise RlError(f"inspecting object: {missing[0]}: image not known")
    return 0


def _run_exists(args: argparse.Namespace) -> int:
    return 0 if _open().exists(args.image) else 1


# --- load / save / import -------------------------------------------------------------------------


def _load_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i", "--input", metavar="PATH", help="Read from specified archive file (default: stdin)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="Suppress the output")


def _run_load(args: argparse.Namespace) -> int:
    from rootless.errors import RlError

    source: IO[bytes]
    if args.input:
        try:
            source = open(args.input, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise RlError(f"open {args.input}: {exc.strerror}") from exc
    else:
        if sys.stdin.isatty():
            raise RlError(
                "cannot read from terminal, use command-line redirection or the --input flag"
            )
        source = sys.stdin.buffer
    with source:
        lines = _open().load(source)
    if not args.quiet:
        sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


def _save_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="Write to a specified file (default: stdout, which must be redirected)",
    )
    parser.add_argument(
        "--format",
        default="docker-archive",
        choices=["docker-archive", "oci-archive"],
        help='Save image to docker-archive or oci-archive (default "docker-archive")',
    )
    parser.add_argument(
        "-m",
        "--multi-image-archive",
        action="store_true",
        help="Interpret additional arguments as images not tags and create a "
        "multi-image-archive (only for docker-archive)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="Suppress the output")
    parser.add_argument("images", nargs="+", metavar="IMAGE")


def _run_save(args: argparse.Namespace) -> int:
    from rootless.errors import RlError
    from rootless.images import archive

    if not args.output and sys.stdout.isatty():
        raise RlError("refusing to save to terminal. Use -o flag or redirect")
    store = _open()
    saved: list[archive.SavedImage] = []
    for name in args.images:
        found = store.find(name)
        if found is None:
            raise RlError(f"{name}: image not known")
        image, matched = found
        names = [matched] if matched else list(image.names)
        existing = next((s for s in saved if s.config_digest == image.config_digest), None)
        if existing is not None:
            existing.names.extend(n for n in names if n not in existing.names)
            continue
        saved.append(
            archive.SavedImage(
                names=names,
                config_digest=image.config_digest,
                manifest_digest=image.digest,
                manifest_type=image.manifest_type,
                layers=[
                    (d, b, t) for d, (b, t) in zip(image.diff_ids, image.layer_blobs, strict=True)
                ],
            )
        )
    writer = (
        archive.write_oci_archive if args.format == "oci-archive" else archive.write_docker_archive
    )
    if not args.output:
        writer(sys.stdout.buffer, saved, store.blob_path)
        sys.stdout.buffer.flush()
        return 0
    _write_atomically(args.output, lambda out: writer(out, saved, store.blob_path))
    return 0


def _write_atomically(path: str, write: Callable[[Any], None]) -> None:
    """Write through a temporary file in the same directory: a failed save leaves nothing."""
    import tempfile

    from rootless.errors import RlError

    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temp = tempfile.mkstemp(prefix=".rl-save-", dir=directory)
    except OSError as exc:
        raise RlError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        os.unlink(temp)
        raise RlError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        os.unlink(temp)
        raise


def _import_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--change",
        action="append",
        default=[],
        metavar="INSTRUCTION",
        help="Apply the following possible instructions to the created image (default []): "
        "CMD | ENTRYPOINT | ENV | EXPOSE | LABEL | STOPSIGNAL | USER | VOLUME | WORKDIR",
    )
    parser.add_argument("-m", "--message", default="", help="Set commit message for imported image")
    parser.add_argument("-q", "--quiet", action="store_true", help="Suppress output")
    parser.add_argument("path", metavar="PATH", help="a tarball, or - for stdin")
    parser.add_argument("reference", nargs="?", metavar="REFERENCE")


def _run_import(args: argparse.Namespace) -> int:
    from rootless.errors import RlError
    from rootless.images.changes import parse_change

    for change in args.change:
        parse_change(change)  # bad input fails before any work
    source: IO[bytes]
    if args.path == "-":
        source = sys.stdin.buffer
    else:
        try:
            source = open(args.path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise RlError(f"open {args.path}: {exc.strerror}") from exc
    with source:
        image_id = _open().import_tarball(
            source, name=args.reference, changes=args.change, message=args.message
        )
    sys.stdout.write(f"sha256:{image_id}\n")
    return 0


# --- names and removal ----------------------------------------------------------------------------


def _tag_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("names", nargs="+", metavar="TARGET_NAME")


def _run_tag(args: argparse.Namespace) -> int:
    store = _open()
    store.tag(store.resolve(args.image), args.names)
    return 0


def _untag_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("names", nargs="*", metavar="NAME")


def _run_untag(args: argparse.Namespace) -> int:
    store = _open()
    store.untag(store.resolve(args.image), args.names)
    return 0


def _rmi_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--all", action="store_true", help="Remove all images")
    parser.add_argument("-f", "--force", action="store_true", help="Force Removal of the image")
    parser.add_argument(
        "-i",
        "--ignore",
        action="store_true",
        help="Ignore errors if a specified image does not exist",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE")


def _run_rmi(args: argparse.Namespace) -> int:
    from rootless.errors import RlError
    from rootless.images.store import Removal, plan_removal

    if args.all == bool(args.images):
        raise RlError(
            "when using the --all switch, you may not pass any images names or IDs"
            if args.all
            else "image name or ID must be specified"
        )
    store = _open()
    removals: dict[str, Removal] = {}
    missing: list[str] = []
    targets: list[tuple[Image, str | None]] = []
    in_use: list[str] = []
    if args.all:  # everything but what containers use, which is reported at the end
        used = store.in_use()
        targets = [(image, None) for image in store.images() if image.id not in used]
        in_use = sorted(used)
    for name in args.images:
        found = store.find(name)
        if found is None:
            missing.append(name)
        else:
            targets.append(found)
    for image, matched in targets:
        plan = plan_removal(image, matched, force=args.force or args.all)
        before = removals.get(image.id)
        if before is not None:  # two arguments naming one image
            untag = tuple(dict.fromkeys(before.untag + plan.untag))
            plan = Removal(
                image.id, untag, before.delete or plan.delete or set(untag) >= set(image.names)
            )
        removals[image.id] = plan
    for line in store.remove(list(removals.values())):
        print(line)
    if in_use:
        raise RlError(
            f"image used by a container: {in_use[0]}: remove the container first (rl rm -f)"
        )
    if missing and not args.ignore:
        for name in missing[:-1]:
            print(f"Error: {name}: image not known", file=sys.stderr)
        raise RlError(f"{missing[-1]}: image not known", exit_code=1)
    return 0


def _confirm(warning: str) -> bool:
    """podman's `[y/N]` prompt; EOF on stdin is an error, as in podman."""
    from rootless.errors import RlError

    sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline()
    if not answer:
        raise RlError("EOF")
    return answer.strip().lower() in ("y", "yes")


def _run_prune(args: argparse.Namespace) -> int:
    from rootless.images.store import Removal

    if not args.force:
        what = "all images not in use by containers" if args.all else "all dangling images"
        if not _confirm(f"WARNING! This command removes {what}."):
            return 0
    store = _open()
    used = store.in_use()
    doomed = [
        image for image in store.images() if (args.all or not image.names) and image.id not in used
    ]
    store.remove([Removal(image.id, tuple(image.names), delete=True) for image in doomed])
    for image in doomed:
        print(image.id)
    return 0


# --- system df / reset ----------------------------------------------------------------------------


def _df_size(size: float) -> str:
    """As `podman system df` prints sizes ("7.952MB")."""
    from rootless.cli.output import human_size

    return human_size(size, precision=4, separator="")


def _count_dirs(path: Any) -> int:
    try:
        return sum(1 for entry in os.scandir(path) if entry.is_dir())
    except OSError:
        return 0


def _run_df(args: argparse.Namespace) -> int:
    from rootless.cli.output import print_json, table

    store = _open()
    count, size = store.disk_usage()
    used = store.in_use()
    active = len(used)
    unused_size = sum(image.size for image in store.images() if image.id not in used)
    rows: list[dict[str, Any]] = [
        {
            "Type": "Images",
            "Total": count,
            "Active": active,
            "Size": size,
            "Reclaimable": unused_size,
        },
        {
            "Type": "Containers",
            "Total": _count_dirs(store.root / "containers"),
            "Active": 0,
            "Size": 0,
            "Reclaimable": 0,
        },
        {
            "Type": "Local Volumes",
            "Total": _count_dirs(store.root / "volumes"),
            "Active": 0,
            "Size": 0,
            "Reclaimable": 0,
        },
    ]
    if args.format == "json":
        print_json(rows)
        return 0

    def reclaimable(row: dict[str, Any]) -> str:
        percent = 100 * row["Reclaimable"] // row["Size"] if row["Size"] else 0
        return f"{_df_size(row['Reclaimable'])} ({percent}%)"

    if args.format:
        for row in rows:
            sys.stdout.write(render(args.format, row) + "\n")
        return 0
    table(
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
        [
            [r["Type"], str(r["Total"]), str(r["Active"]), _df_size(r["Size"]), reclaimable(r)]
            for r in rows
        ],
    )
    return 0


def _run_reset(args: argparse.Namespace) -> int:
    import shutil

    from rootless import paths
    from rootless.errors import RlError

    root = paths.data_dir()
    runtime = paths.runtime_dir()
    if not args.force:
        if not sys.stdin.isatty():
            raise RlError(
                "system reset needs confirmation and stdin is not a terminal: use -f/--force"
            )
        warning = (
            "WARNING! This will remove:\n"
            "        - all containers\n"
            "        - all images\n"
            "        - all volumes\n"
            f'        - the graphRoot directory: "{root}"\n'
            f'        - the runRoot directory: "{runtime}"'
        )
        if not _confirm(warning):
            return 0
    if root.exists():
        _open().reset()
    shutil.rmtree(runtime, ignore_errors=True)
    return 0
