#!/usr/bin/env python3
"""Generates the benchmark inputs without a Docker daemon (Python 3 stdlib only).

Writes under INPUTS_DIR (reused when `inputs.json` there has the same recipe version):

  files.tar      ~1 GiB layer: a tar of real files from /usr/share then /usr/lib,
                 stopped once 1 GiB of file content is in (compressible, like a distro layer)
  random.tar     256 MiB layer of seeded pseudo-random bytes (incompressible)
  random2.tar    another 256 MiB random layer (different seed): image 2's own layer
  small.tar      ~5 MiB layer of real files from /usr/bin
  big.tar        docker save archive (Docker >= 25 classic-store form, formats.md 1.1):
                 bench/big:1 = [files.tar, random.tar]                          (~1.3 GiB)
  big2.tar       bench/big:2 = [files.tar, random2.tar]: shares all but one layer with big.tar
  small.tar      (archive) bench/small:1 = [small layer]            -> small-image.tar
  many.tar       bench/many:1 = 60 layers of 100 KiB-2 MiB (slices of files.tar: real, compressible
                 bytes), like an application image of many small layers
  --scale adds:
  scale.tar      bench/scale:1 = one 6 GiB layer (1 GiB of real files + 5 GiB random),
                 so even gzip-compressed it stays above S3's 5 GiB single-copy limit

The archive form follows moby >= 25.0.1 `docker save` with the classic store:
`blobs/sha256/<hex>` for every blob (config, uncompressed layers named by diff_id,
OCI manifest) in lexical order, then index.json, manifest.json, oci-layout, repositories.
"""

import hashlib
import json
import os
import random
import stat
import sys
import tarfile
import time

RECIPE = 3  # bump when what is generated changes
GiB = 1 << 30
MiB = 1 << 20

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
CREATED = "2024-01-01T00:00:00Z"
CREATED_TS = 1704067200


def log(*a):
    print("geninputs:", *a, file=sys.stderr, flush=True)


def go_json(obj):
    return json.dumps(obj, separators=(",", ":"))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def files_layer(path, roots, cap):
    """A tar of real files under `roots` (sorted walk), stopped once `cap` bytes of content are in."""
    total = 0
    n = 0
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, copybufsize=4 * MiB) as tf:
        for root in roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in [""] + sorted(filenames):
                    p = os.path.join(dirpath, name) if name else dirpath
                    try:
                        st = os.lstat(p)
                    except OSError:
                        continue
                    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                        continue
                    if stat.S_ISREG(st.st_mode) and total + st.st_size > cap + 64 * MiB:
                        continue  # keep the cap tight: skip one huge file rather than overshoot
                    try:
                        ti = tf.gettarinfo(p, arcname=p.lstrip("/"))
                        ti.uname = ti.gname = ""
                        ti.uid = ti.gid = 0
                        if ti.isreg():
                            with open(p, "rb") as f:
                                tf.addfile(ti, f)
                            total += ti.size
                        else:
                            tf.addfile(ti)
                        n += 1
                    except OSError:
                        continue
                    if total >= cap:
                        log(f"{path}: {n} entries, {total} bytes of file content")
                        return
    log(f"{path}: {n} entries, {total} bytes of file content (roots exhausted)")


def random_stream(seed, size, chunk=64 * MiB):
    rng = random.Random(seed)
    left = size
    while left:
        k = min(chunk, left)
        yield rng.randbytes(k)
        left -= k


class GenReader:
    """File-like object over a generator of byte chunks (for tarfile.addfile)."""

    def __init__(self, gen):
        self.gen = gen
        self.buf = b""
        self.pos = 0

    def read(self, n=-1):
        parts = []
        while n != 0:
            if self.pos >= len(self.buf):
                self.buf, self.pos = next(self.gen, b""), 0
                if not self.buf:
                    break
            k = len(self.buf) - self.pos if n < 0 else min(n, len(self.buf) - self.pos)
            parts.append(self.buf[self.pos:self.pos + k])
            self.pos += k
            if n > 0:
                n -= k
        return b"".join(parts)


def random_layer(path, seed, size, files=4):
    per = size // files
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, copybufsize=4 * MiB) as tf:
        d = tarfile.TarInfo("opt/random")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, CREATED_TS
        tf.addfile(d)
        for i in range(files):
            ti = tarfile.TarInfo(f"opt/random/blob-{seed}-{i}.bin")
            ti.size, ti.mode, ti.mtime = per, 0o644, CREATED_TS
            tf.addfile(ti, GenReader(random_stream(seed * 1000 + i, per)))


def scale_layer(path, files_tar, seed, random_size):
    """6 GiB: the real-files tar as one member (1 GiB compressible) + random members."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, copybufsize=4 * MiB) as tf:
        ti = tf.gettarinfo(files_tar, arcname="opt/scale/files.tar")
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        with open(files_tar, "rb") as f:
            tf.addfile(ti, f)
        per = GiB
        for i in range(random_size // per):
            ti = tarfile.TarInfo(f"opt/scale/random-{i}.bin")
            ti.size, ti.mode, ti.mtime = per, 0o644, CREATED_TS
            tf.addfile(ti, GenReader(random_stream(seed * 1000 + i, per)))


def many_layers(d, files_tar, count=60, seed=7):
    """`count` small layers, 100 KiB to 2 MiB each, every one a different slice of files_tar."""
    rng = random.Random(seed)
    total = os.path.getsize(files_tar)
    paths = []
    with open(files_tar, "rb") as src:
        for i in range(count):
            size = rng.randint(100 * 1024, 2 * MiB)
            src.seek(rng.randrange(0, total - size))
            data = src.read(size)
            path = os.path.join(d, f"layer-many-{i:02d}.tar")
            with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
                ti = tarfile.TarInfo(f"app/part-{i:02d}.bin")
                ti.size, ti.mode, ti.mtime = len(data), 0o644, CREATED_TS
                import io
                tf.addfile(ti, io.BytesIO(data))
            paths.append(path)
    return paths


def write_archive(path, name, tag, layer_paths):
    """A Docker >= 25 classic-store `docker save` archive of one image."""
    layers = []
    for lp in layer_paths:
        layers.append((sha256_file(lp), os.path.getsize(lp), lp))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h for h, _, _ in layers]},
        "history": [{"created": CREATED, "created_by": f"s3dock bench layer {i}"} for i in range(len(layers))],
    }
    cfg = go_json(config).encode()
    cfg_hex = hashlib.sha256(cfg).hexdigest()
    manifest = go_json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": "sha256:" + cfg_hex, "size": len(cfg)},
        "layers": [{"mediaType": MT_LAYER, "digest": "sha256:" + h, "size": s} for h, s, _ in layers],
    }).encode()
    m_hex = hashlib.sha256(manifest).hexdigest()
    full = f"docker.io/{name}:{tag}" if "/" in name else f"docker.io/library/{name}:{tag}"
    index = go_json({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST, "digest": "sha256:" + m_hex, "size": len(manifest),
            "annotations": {"io.containerd.image.name": full, "org.opencontainers.image.ref.name": tag},
        }],
    }).encode()
    mjson = (json.dumps([{
        "Config": "blobs/sha256/" + cfg_hex,
        "RepoTags": [f"{name}:{tag}"],
        "Layers": ["blobs/sha256/" + h for h, _, _ in layers],
        "LayerSources": {"sha256:" + h: {"mediaType": MT_LAYER, "size": s, "digest": "sha256:" + h} for h, s, _ in layers},
    }], separators=(",", ":")) + "\n").encode()
    repos = (go_json({name: {tag: layers[-1][0]}}) + "\n").encode()

    blobs = {cfg_hex: ("bytes", cfg), m_hex: ("bytes", manifest)}
    for h, _, lp in layers:
        blobs[h] = ("file", lp)

    def add_bytes(tf, arc, data, mtime):
        ti = tarfile.TarInfo(arc)
        ti.size, ti.mode, ti.mtime = len(data), 0o644, mtime
        ti.uname = ti.gname = "root"
        import io
        tf.addfile(ti, io.BytesIO(data))

    def add_dir(tf, arc):
        ti = tarfile.TarInfo(arc)
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, CREATED_TS
        ti.uname = ti.gname = "root"
        tf.addfile(ti)

    tmp = path + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT, copybufsize=4 * MiB) as tf:
        add_dir(tf, "blobs")
        add_dir(tf, "blobs/sha256")
        for h in sorted(blobs):
            kind, v = blobs[h]
            if kind == "bytes":
                add_bytes(tf, "blobs/sha256/" + h, v, CREATED_TS)
            else:
                ti = tarfile.TarInfo("blobs/sha256/" + h)
                ti.size, ti.mode, ti.mtime = os.path.getsize(v), 0o644, CREATED_TS
                ti.uname = ti.gname = "root"
                with open(v, "rb") as f:
                    tf.addfile(ti, f)
        add_bytes(tf, "index.json", index, 0)
        add_bytes(tf, "manifest.json", mjson, 0)
        add_bytes(tf, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}', 0)
        add_bytes(tf, "repositories", repos, 0)
    os.replace(tmp, path)
    return {
        "path": path,
        "ref": f"{name}:{tag}",
        "size": os.path.getsize(path),
        "config": "sha256:" + cfg_hex,
        "manifest": "sha256:" + m_hex,
        "layers": [{"diff_id": "sha256:" + h, "size": s, "file": lp} for h, s, lp in layers],
    }


def main():
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--scale", action="store_true")
    a = ap.parse_args()
    d = a.dir
    os.makedirs(d, exist_ok=True)
    meta_path = os.path.join(d, "inputs.json")
    meta = {}
    if os.path.exists(meta_path):
        try:
            meta = json.load(open(meta_path))
        except ValueError:
            meta = {}
    if meta.get("recipe") != RECIPE:
        meta = {"recipe": RECIPE, "images": {}}
    imgs = meta["images"]

    def have(key):
        return key in imgs and os.path.exists(imgs[key]["path"]) and os.path.getsize(imgs[key]["path"]) == imgs[key]["size"]

    def p(n):
        return os.path.join(d, n)

    t0 = time.time()
    if not (have("big") and have("big2") and have("small")):
        log("building layers (first run only; reused afterwards)")
        files_layer(p("layer-files.tar"), ["/usr/share", "/usr/lib"], GiB)
        random_layer(p("layer-random.tar"), 1, 256 * MiB)
        random_layer(p("layer-random2.tar"), 2, 256 * MiB)
        files_layer(p("layer-small.tar"), ["/usr/bin"], 5 * MiB)
        imgs["big"] = write_archive(p("big.tar"), "bench/big", "1", [p("layer-files.tar"), p("layer-random.tar")])
        imgs["big2"] = write_archive(p("big2.tar"), "bench/big", "2", [p("layer-files.tar"), p("layer-random2.tar")])
        imgs["small"] = write_archive(p("small-image.tar"), "bench/small", "1", [p("layer-small.tar")])
        json.dump(meta, open(meta_path, "w"), indent=1)
    if not have("many"):
        imgs["many"] = write_archive(p("many.tar"), "bench/many", "1", many_layers(d, p("layer-files.tar")))
        json.dump(meta, open(meta_path, "w"), indent=1)
    if a.scale and not have("scale"):
        log("building the 6 GiB scale layer and archive (needs ~12 GiB of disk)")
        scale_layer(p("layer-scale.tar"), p("layer-files.tar"), 3, 5 * GiB)
        imgs["scale"] = write_archive(p("scale.tar"), "bench/scale", "1", [p("layer-scale.tar")])
        json.dump(meta, open(meta_path, "w"), indent=1)
    log(f"inputs ready in {time.time() - t0:.0f}s: " + ", ".join(f"{k} {v['size'] / 1e9:.2f} GB" for k, v in imgs.items()))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
