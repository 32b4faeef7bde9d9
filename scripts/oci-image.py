#!/usr/bin/env python3
"""Write a one-layer OCI image (an OCI image layout, as a tar) from files on
this machine, without Docker or a registry: what scripts/image and the node
of scripts/infra import into containerd (`ctr images import`).

    oci-image.py --name REF --out FILE.tar [--entrypoint JSON] [--cmd JSON]
                 [--env K=V]... [--user UID:GID] [--workdir DIR]
                 [--file SRC:DEST[:MODE]]... [--dir DEST[:MODE[:UID:GID]]]...
                 [--text DEST:CONTENT]...

The layer is an uncompressed tar with every entry owned by root (unless a
--dir says otherwise) and dated 1970: the same inputs give the same image
digest. Parent directories are created. Symlinks among --file sources are
followed (the image gets the file's content under DEST).
"""

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile


def add_dirs(tar, seen, path):
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d in seen:
            continue
        seen.add(d)
        info = tarfile.TarInfo(d)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)


def layer(args):
    buf = io.BytesIO()
    seen = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for spec in args.dir:
            parts = spec.split(":")
            dest = parts[0].strip("/")
            mode = int(parts[1], 8) if len(parts) > 1 else 0o755
            uid = int(parts[2]) if len(parts) > 2 else 0
            gid = int(parts[3]) if len(parts) > 3 else 0
            add_dirs(tar, seen, dest)
            seen.add(dest)
            info = tarfile.TarInfo(dest)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            info.uid, info.gid = uid, gid
            tar.addfile(info)
        entries = []
        for spec in args.file:
            parts = spec.split(":")
            if len(parts) < 2:
                sys.exit(f"--file {spec}: expected SRC:DEST[:MODE]")
            src, dest = parts[0], parts[1].strip("/")
            with open(src, "rb") as f:
                data = f.read()
            mode = int(parts[2], 8) if len(parts) > 2 else (os.stat(src).st_mode & 0o777)
            entries.append((dest, data, mode))
        for spec in args.text:
            dest, _, content = spec.partition(":")
            entries.append((dest.strip("/"), content.encode(), 0o644))
        for dest, data, mode in sorted(entries):
            add_dirs(tar, seen, dest)
            info = tarfile.TarInfo(dest)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def blob(tar, data, media_type):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="image reference, e.g. ghcr.io/confab-chat/confab:0.1.0")
    p.add_argument("--out", required=True)
    p.add_argument("--entrypoint", type=json.loads)
    p.add_argument("--cmd", type=json.loads)
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--user")
    p.add_argument("--workdir")
    p.add_argument("--label", action="append", default=[])
    p.add_argument("--file", action="append", default=[])
    p.add_argument("--dir", action="append", default=[])
    p.add_argument("--text", action="append", default=[])
    args = p.parse_args()

    layer_tar = layer(args)
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + args.env},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "scripts/oci-image.py"}],
    }
    c = config["config"]
    if args.entrypoint is not None:
        c["Entrypoint"] = args.entrypoint
    if args.cmd is not None:
        c["Cmd"] = args.cmd
    if args.user:
        c["User"] = args.user
    if args.workdir:
        c["WorkingDir"] = args.workdir
    if args.label:
        c["Labels"] = dict(kv.split("=", 1) for kv in args.label)

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        layer_desc = blob(tar, layer_tar, "application/vnd.oci.image.layer.v1.tar")
        config_desc = blob(tar, json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc],
        }
        manifest_desc = blob(tar, json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
        manifest_desc["annotations"] = {
            "io.containerd.image.name": args.name,
            "org.opencontainers.image.ref.name": args.name.rsplit(":", 1)[-1],
        }
        manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc]}
        for name, data in (
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index, sort_keys=True).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)
    print(manifest_desc["digest"])


if __name__ == "__main__":
    main()
