#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, made from the repository's fixtures.

    python3 fuzz/make_seeds.py OUT_DIR

writes (stdlib only; the `zstd` command is used when present):

  OUT_DIR/archive_layout/  every fixtures/*.tar in the text form of the
                           `archive_layout` target: large layers replaced by a tiny
                           tar compressed the same way, every digest of a file in
                           the archive replaced by a `$NN` / `%NN` token, so the
                           target rebuilds an archive whose digests all match;
  OUT_DIR/archive/         fixtures/bad/* (the broken inputs). scripts/fuzz.sh adds
                           the archives rendered from archive_layout/ (plain, gzip
                           and zstd) by running that target once over its seeds;
  OUT_DIR/documents/       every JSON file in the fixtures (manifest.json,
                           index.json, OCI manifests, configs, repositories) and the
                           image names, tags and command-line values they use;
  OUT_DIR/store/           whole directory stores in the text form of the `store`
                           target: fixtures pushed (each compression), tagged and
                           promoted by the real binary ($S3DOCK_BIN, else
                           target/release/s3dock; skipped when neither exists), big
                           layers replaced by a tiny one, digests and sizes of blobs
                           replaced by `%NN` / `#NN` tokens.

Nothing here is committed: the script runs before every fuzz run (about a second).
"""

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from hashlib import sha256

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")
MAX_LEN = 256 << 10  # scripts/fuzz.sh's -max_len for the archive targets
BIG = 4096  # layers above this are replaced by a tiny one
HEX = re.compile(rb"[0-9a-f]{64}")

STRINGS = [
    "myapp:v1.0", "localhost:5000/team/app:1", "docker.io/library/busybox:latest",
    "index.docker.io/library/x", "team/app@sha256:" + "ab" * 32,
    "registry.example.com:443/a/b_c__d-e.f:tag_1", "sha256:" + "0" * 64, "0" * 64,
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar", "30m", "2h", "1d", "0s", "16MiB", "5 mb",
    "1G", "v1.2.3", "1.2.3-rc.1", "v1.0.0+build", "production", "staging-2",
    "20250721-2118-f7a5a27", "https://user:secret@s3.example.com/bucket", "http://[::1]:9000",
]


def zstd_frame(data):
    """A zstd frame of raw blocks (no compression): valid for every decoder."""
    out = bytearray(b"\x28\xb5\x2f\xfd\xa0") + len(data).to_bytes(4, "little")
    chunks = [data[i:i + (128 << 10)] for i in range(0, len(data), 128 << 10)] or [b""]
    for i, c in enumerate(chunks):
        last = 1 if i == len(chunks) - 1 else 0
        out += ((len(c) << 3) | last).to_bytes(3, "little") + c
    return bytes(out)


def zstd(data):
    if shutil.which("zstd"):
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, check=True,
                              capture_output=True).stdout
    return zstd_frame(data)


def unzstd(data):
    if not shutil.which("zstd"):
        return None
    r = subprocess.run(["zstd", "-q", "-d", "-c"], input=data, capture_output=True)
    return r.stdout if r.returncode == 0 else None


def tiny_layer(n):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        body = f"fuzz seed layer {n}\n".encode()
        ti = tarfile.TarInfo(f"etc/seed-{n}")
        ti.size, ti.mtime, ti.mode = len(body), 1700000000, 0o644
        t.addfile(ti, io.BytesIO(body))
    return buf.getvalue()


def looks_json(b):
    s = b.lstrip()
    return s[:1] in (b"{", b"[")


def plain_of(b):
    """The uncompressed bytes of a file (for its diff_id), or None if unknown."""
    if b[:3] == b"\x1f\x8b\x08":
        try:
            return gzip.decompress(b)
        except OSError:
            return None
    if b[:4] == b"\x28\xb5\x2f\xfd":
        return unzstd(b)
    return b


def layout_of(path):
    """(text form, JSON documents) of one fixture archive."""
    parts, docs = [], []
    with tarfile.open(path, mode="r:*") as t:
        for m in t.getmembers():
            if m.isdir():
                parts.append(["d", m.name.encode(), b""])
            elif m.issym():
                parts.append(["l", m.name.encode(), m.linkname.encode()])
            elif m.islnk():
                parts.append(["h", m.name.encode(), m.linkname.encode()])
            elif m.isfile():
                parts.append(["f", m.name.encode(), t.extractfile(m).read()])
    tokens = {}
    for i, (kind, _, body) in enumerate(parts):
        if kind != "f":
            continue
        if looks_json(body):
            docs.append(body)
        tokens.setdefault(sha256(body).hexdigest().encode(), b"$%02d" % i)
        plain = plain_of(body)
        if plain is not None and plain is not body:
            tokens.setdefault(sha256(plain).hexdigest().encode(), b"%%%02d" % i)
    if len(parts) > 100:
        raise SystemExit(f"{path}: more than 100 entries")
    for i, p in enumerate(parts):
        kind, name, body = p
        if kind == "f" and len(body) > BIG and not looks_json(body):
            new = tiny_layer(i)
            if body[:3] == b"\x1f\x8b\x08":
                new = gzip.compress(new, mtime=0)
            elif body[:4] == b"\x28\xb5\x2f\xfd":
                new = zstd(new)
            p[2] = new
        sub = lambda x: HEX.sub(lambda mo: tokens.get(mo.group(0), mo.group(0)), x)
        p[1] = sub(name)
        if kind != "f" or looks_json(body) or len(body) < 512 and b"\0" not in body:
            p[2] = sub(p[2])
    text = b"\n".join(b"@@ %s %s\n%s" % (k.encode(), n, b) for k, n, b in parts)
    return text, docs


STORE_PUSHES = [("docker25-tiny.tar", "gzip"), ("docker25-tiny.tar", "none"),
                ("docker25-tiny.tar", "zstd"), ("docker-legacy.tar", "gzip")]


def store_text(root):
    """A pushed store directory in the `store` target's text form."""
    blobs, other = {}, {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            key = os.path.relpath(p, root)
            with open(p, "rb") as fh:
                body = fh.read()
            m = re.fullmatch(r"docker/registry/v2/blobs/sha256/../([0-9a-f]{64})/data", key)
            (blobs if m else other)[m.group(1) if m else key] = body
    # Big layers become a tiny tar compressed the same way; their diff_ids follow.
    diff_map = {}
    for h, b in list(blobs.items()):
        if len(b) <= BIG or looks_json(b):
            continue
        plain = plain_of(b)
        n = len(diff_map)
        while True:
            tiny = tiny_layer(n)
            new = (gzip.compress(tiny, mtime=0) if b[:2] == b"\x1f\x8b"
                   else zstd(tiny) if b[:4] == b"\x28\xb5\x2f\xfd" else tiny)
            if new is not None and b"\n>" not in new:
                break
            n += 1000
        if plain is not None:
            diff_map[sha256(plain).hexdigest().encode()] = sha256(tiny).hexdigest().encode()
        blobs[h] = new
    # Blobs in dependency order (a manifest after its config and layers).
    order = []
    while len(order) < len(blobs):
        ready = [h for h in sorted(blobs) if h not in order and
                 all(o.encode() not in blobs[h] or o in order for o in blobs if o != h)]
        order.extend(ready or [h for h in sorted(blobs) if h not in order])
    token = {h.encode(): b"%%%02d" % i for i, h in enumerate(order)}

    def subst(b):
        for old, new in diff_map.items():
            b = b.replace(old, new)
        return HEX.sub(lambda m: token.get(m.group(0), m.group(0)), b)

    out = []
    for h in order:
        b = blobs[h]
        if looks_json(b):
            try:
                v = json.loads(b)
            except ValueError:
                v = None
            if isinstance(v, dict):
                for desc in [v.get("config")] + list(v.get("layers") or []) + list(v.get("manifests") or []):
                    if isinstance(desc, dict) and isinstance(desc.get("digest"), str):
                        t = token.get(desc["digest"].split(":")[-1].encode())
                        if t is not None:
                            desc["size"] = "#" + t.decode()[1:]
                b = re.sub(rb'"(#[0-9]{2})"', rb"\1", json.dumps(v, indent=2).encode())
        out.append(b">blob\n" + subst(b))
    for key in sorted(other):
        out.append(b">" + subst(key.encode()) + b"\n" + subst(other[key]))
    return b"\n".join(out)


def store_seeds(out_dir):
    exe = os.environ.get("S3DOCK_BIN") or os.path.join(ROOT, "target", "release", "s3dock")
    if not os.access(exe, os.X_OK):
        print(f"store seeds skipped: no s3dock binary at {exe} (cargo build --release)")
        return 0
    import tempfile
    env = dict(os.environ, S3DOCK_CONFIG=os.path.join(out_dir, "no-config.toml"),
               S3DOCK_ACTOR="fuzz-seed")
    env.pop("S3DOCK_STORE", None)
    n = 0
    for archive, compression in STORE_PUSHES:
        with tempfile.TemporaryDirectory() as store:
            for args in (["push", "-q", "-i", os.path.join(FIXTURES, archive),
                          "--compression", compression, "app:t"],
                         ["tag", "app:t", "v1.0.0"], ["promote", "app:v1.0.0", "production"]):
                subprocess.run([exe, "-q", "--store", store] + args, env=env, check=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            with open(os.path.join(out_dir, f"{archive[:-4]}-{compression}"), "wb") as o:
                o.write(store_text(store))
            n += 1
    return n


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "fuzz", "seeds")
    dirs = {k: os.path.join(out, k) for k in ("archive", "archive_layout", "documents", "store")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    strings = set(STRINGS)
    n_docs = 0
    for f in sorted(os.listdir(FIXTURES)):
        if not f.endswith(".tar"):
            continue
        text, docs = layout_of(os.path.join(FIXTURES, f))
        stem = f[: -len(".tar")]
        with open(os.path.join(dirs["archive_layout"], stem + ".txt"), "wb") as o:
            o.write(text)
        if stem in ("docker-legacy", "docker25-tiny"):
            for wrap in ("gz", "zst"):
                with open(os.path.join(dirs["archive_layout"], f"{stem}.{wrap}.txt"), "wb") as o:
                    o.write(wrap.encode() + b"\n" + text)
        for d in docs:
            n_docs += 1
            with open(os.path.join(dirs["documents"], sha256(d).hexdigest()[:16] + ".json"), "wb") as o:
                o.write(d)
            try:
                v = json.loads(d)
            except ValueError:
                continue
            # Names: RepoTags in manifest.json, ref names in index annotations, repositories keys.
            items = v if isinstance(v, list) else [v]
            for e in items:
                if not isinstance(e, dict):
                    continue
                strings.update(t for t in e.get("RepoTags") or [] if isinstance(t, str))
                for m in e.get("manifests") or []:
                    strings.update(str(a) for a in (m.get("annotations") or {}).values())
                    if isinstance(m.get("digest"), str):
                        strings.add(m["digest"])
                    if isinstance(m.get("mediaType"), str):
                        strings.add(m["mediaType"])
                for layer in e.get("layers") or []:
                    if isinstance(layer, dict) and isinstance(layer.get("mediaType"), str):
                        strings.add(layer["mediaType"])
    for s in sorted(strings):
        with open(os.path.join(dirs["documents"], "s-" + sha256(s.encode()).hexdigest()[:16]), "w") as o:
            o.write(s)
    bad = os.path.join(FIXTURES, "bad")
    n_bad = 0
    for f in sorted(os.listdir(bad)):
        p = os.path.join(bad, f)
        if os.path.getsize(p) <= MAX_LEN:
            shutil.copyfile(p, os.path.join(dirs["archive"], "bad-" + f))
            n_bad += 1
    n_stores = store_seeds(dirs["store"])
    print(f"seeds in {out}: {len(os.listdir(dirs['archive_layout']))} layouts, "
          f"{n_bad} broken archives, {n_docs} documents, {len(strings)} strings, "
          f"{n_stores} stores")


if __name__ == "__main__":
    main()
