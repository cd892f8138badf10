#!/usr/bin/env python3
"""s3dock benchmark driver (issue 4). Run it through benches/run.sh, which builds s3dock,
starts the S3 servers and sets the environment; see the top of run.sh for usage.

Cases run in rounds: round i runs every case once, in a fixed order, against its own
stores (prefix ...-r{i}), so slow drift or a busy neighbour on a shared machine hits
s3dock and its baselines alike; target ratios are given both as ratio of medians and
as the median of per-round ratios. Wall time is measured around the whole command
(pipelines included); peak RSS and CPU seconds with /usr/bin/time -v on the process
that matters (s3dock, or the baseline's main tool). Results: benches/results/latest.{json,md}.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MiB = 1 << 20


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def q(s):
    return shlex.quote(str(s))


def sh_out(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


def cpu_jiffies():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


class Case:
    def __init__(self, name, group, desc, cmd, basis, basis_label, setup=None, after=None, tool="s3dock",
                 parse_json=False, out_size=False, rounds=None, writes=False):
        self.name, self.group, self.desc, self.cmd = name, group, desc, cmd
        self.writes = writes  # writes its output into new files: settle first (see run_case)
        self.basis, self.basis_label = basis, basis_label
        self.setup, self.after, self.tool = setup, after, tool
        self.parse_json, self.out_size = parse_json, out_size
        self.rounds = rounds  # run only in rounds < this (None: every round)
        self.rec = {"name": name, "group": group, "desc": desc, "tool": tool, "basis": basis_label,
                    "basis_bytes": None, "runs": [], "rss": [], "cpu": [], "machine_busy": [], "extra": []}


class LinkNet:
    """A network namespace of the bench's own with a veth pair to it, rate-limited by tbf on both
    ends (this kernel has no netem), and an s3s-fs and a registry:2 (filesystem driver) inside, so
    every byte between the host and those servers crosses the limited link; with Garage installed
    (scripts/setup.sh), a single-node Garage too, the production server whose multipart completion
    does not copy the parts. `down()` removes the namespace (and so the veth pair and both qdiscs)
    and stops the servers."""

    GARAGE_BIN = os.path.join(os.environ.get("S3DOCK_GARAGE_ROOT", os.path.expanduser("~/.cache/s3dock/garage")),
                              "bin", "garage")

    NS, HOST_IF, NS_IF = "s3dbench", "s3db-h", "s3db-n"
    HOST_IP, NS_IP = "10.231.77.1", "10.231.77.2"

    def __init__(self, work, bucket):
        self.work, self.bucket = work, bucket
        self.procs = []
        self.mbit = None

    @staticmethod
    def sh(*cmd, check=True):
        return subprocess.run(list(cmd), check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def nsx(self, *cmd, check=True):
        return self.sh("ip", "netns", "exec", self.NS, *cmd, check=check)

    def up(self):
        self.down()
        self.sh("ip", "netns", "add", self.NS)
        self.sh("ip", "link", "add", self.HOST_IF, "type", "veth", "peer", "name", self.NS_IF)
        self.sh("ip", "link", "set", self.NS_IF, "netns", self.NS)
        self.sh("ip", "addr", "add", f"{self.HOST_IP}/30", "dev", self.HOST_IF)
        self.sh("ip", "link", "set", self.HOST_IF, "up")
        self.nsx("ip", "addr", "add", f"{self.NS_IP}/30", "dev", self.NS_IF)
        self.nsx("ip", "link", "set", self.NS_IF, "up")
        self.nsx("ip", "link", "set", "lo", "up")
        d = os.path.join(self.work, "link")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, "s3s"))
        s3s = shutil.which("s3s-fs") or os.path.expanduser("~/.cargo/bin/s3s-fs")
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)
        # the same TCP_NODELAY shim as the loopback s3s-fs (scripts/nodelay.c)
        s3s_env = dict(env, LD_PRELOAD=os.environ["S3DOCK_NODELAY_SO"])
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", self.NS, s3s, "--host", self.NS_IP, "--port", "9000",
             "--access-key", os.environ["AWS_ACCESS_KEY_ID"], "--secret-key", os.environ["AWS_SECRET_ACCESS_KEY"],
             os.path.join(d, "s3s")], stdout=open(os.path.join(d, "s3s.log"), "w"), stderr=subprocess.STDOUT, env=s3s_env))
        reg = shutil.which("docker-registry") or shutil.which("registry")
        cfg = os.path.join(d, "registry.yml")
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {d}/registry\n"
                    f"  delete:\n    enabled: true\nhttp:\n  addr: {self.NS_IP}:5000\n")
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", self.NS, reg, "serve", cfg],
                                           stdout=open(os.path.join(d, "registry.log"), "w"), stderr=subprocess.STDOUT, env=env))
        self.endpoint = f"http://{self.NS_IP}:9000"
        self.registry = f"{self.NS_IP}:5000"
        import boto3
        from botocore.config import Config
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, config=Config(s3={"addressing_style": "path"}))
        self.garage = self.garage_s3 = None
        if os.path.exists(self.GARAGE_BIN):
            self.garage = self.start_garage(os.path.join(d, "garage"), env)
            self.garage_s3 = boto3.client("s3", endpoint_url=self.garage, config=Config(s3={"addressing_style": "path"}))
        for _ in range(100):
            try:
                self.s3.create_bucket(Bucket=self.bucket)
                subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://{self.registry}/v2/"], check=True)
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.2)
        else:
            raise RuntimeError("servers in the link namespace did not start")

    def start_garage(self, g, env):
        """Garage, single node, its S3 API on the namespace's end of the link (as scripts/s3-servers.sh
        sets it up on 127.0.0.1); returns the endpoint."""
        import secrets
        os.makedirs(os.path.join(g, "meta"))
        os.makedirs(os.path.join(g, "data"))
        conf = os.path.join(g, "garage.toml")
        with open(conf, "w") as f:
            f.write(f'metadata_dir = "{g}/meta"\ndata_dir = "{g}/data"\ndb_engine = "sqlite"\nreplication_factor = 1\n'
                    f'rpc_bind_addr = "127.0.0.1:3901"\nrpc_public_addr = "127.0.0.1:3901"\nrpc_secret = "{secrets.token_hex(32)}"\n'
                    f'[s3_api]\ns3_region = "{os.environ.get("AWS_REGION", "us-east-1")}"\napi_bind_addr = "{self.NS_IP}:3900"\n'
                    f'root_domain = ".s3.garage.localhost"\n[admin]\napi_bind_addr = "127.0.0.1:3903"\n'
                    f'admin_token = "{secrets.token_hex(16)}"\n')
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", self.NS, self.GARAGE_BIN, "-c", conf, "server"],
                                           stdout=open(os.path.join(g, "garage.log"), "w"), stderr=subprocess.STDOUT,
                                           env=dict(env, RUST_LOG="warn")))
        garage = lambda *a, check=True: self.nsx(self.GARAGE_BIN, "-c", conf, *a, check=check)
        endpoint = f"http://{self.NS_IP}:3900"
        # `node id` answers from the key file before the server takes RPCs: wait for its
        # S3 API first, as scripts/s3-servers.sh does.
        for _ in range(200):
            if subprocess.run(["curl", "-s", "-o", "/dev/null", endpoint]).returncode == 0:
                r = garage("node", "id", "-q", check=False)
                if r.returncode == 0:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError("Garage in the link namespace did not start")
        key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
        garage("layout", "assign", "-z", "dc1", "-c", "10G", r.stdout.strip().split("@")[0])
        garage("layout", "apply", "--version", "1")
        garage("key", "import", "--yes", "-n", "bench", key, secret)
        garage("bucket", "create", self.bucket)
        garage("bucket", "allow", "--read", "--write", "--owner", self.bucket, "--key", key)
        return endpoint

    def rate(self, mbit):
        """tbf on both ends: pushes leave through the host's end, pulls through the namespace's."""
        burst = f"{max(128, mbit // 2)}kb"  # > a 64 KiB GSO packet; ~4 ms at the rate
        self.sh("tc", "qdisc", "replace", "dev", self.HOST_IF, "root", "tbf", "rate", f"{mbit}mbit", "burst", burst, "latency", "50ms")
        self.nsx("tc", "qdisc", "replace", "dev", self.NS_IF, "root", "tbf", "rate", f"{mbit}mbit", "burst", burst, "latency", "50ms")
        self.mbit = mbit

    def down(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []
        self.sh("tc", "qdisc", "del", "dev", self.HOST_IF, "root", check=False)
        self.sh("ip", "netns", "del", self.NS, check=False)  # takes the veth pair and its qdiscs with it
        self.sh("ip", "link", "del", self.HOST_IF, check=False)
        shutil.rmtree(os.path.join(self.work, "link"), ignore_errors=True)


class Bench:
    def __init__(self, a):
        self.a = a
        self.work = a.work
        self.out_dir = os.path.join(self.work, "out")
        self.store_dir = os.path.join(self.work, "stores")
        self.tmp = os.path.join(self.work, "tmp")
        for d in (self.out_dir, self.store_dir, self.tmp):
            os.makedirs(d, exist_ok=True)
        self.bin = a.s3dock
        self.endpoint = os.environ["S3DOCK_TEST_S3S"]
        self.moto = os.environ.get("S3DOCK_TEST_MOTO")
        self.bucket = os.environ["S3DOCK_TEST_BUCKET"]
        self.venv = os.environ["S3DOCK_TEST_VENV"]
        self.aws = os.path.join(self.venv, "bin", "aws")
        self.py = os.path.join(self.venv, "bin", "python")
        self.nproc = os.cpu_count() or 1
        self.cases = []
        self.registries = []
        self.state = {}
        self._targets = []
        self.filter = re.compile(a.only) if a.only else None
        import boto3
        from botocore.config import Config
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, config=Config(s3={"addressing_style": "path"}))
        self.moto_s3 = boto3.client("s3", endpoint_url=self.moto, config=Config(s3={"addressing_style": "path"})) if self.moto else None
        self.garage = os.environ.get("S3DOCK_TEST_GARAGE")
        self.garage_s3 = boto3.client("s3", endpoint_url=self.garage, config=Config(s3={"addressing_style": "path"})) if self.garage else None
        self.link = None  # LinkNet while the --link cases run
        self.inputs = json.loads(subprocess.run(
            [sys.executable, os.path.join(HERE, "geninputs.py"), os.path.join(self.work, "inputs")]
            + (["--scale"] if a.scale else []),
            check=True, stdout=subprocess.PIPE).stdout)["images"]
        self._machine = self.machine()

    # -------------------------------------------------------------- running

    def s3dock(self, store, *args, endpoint=None):
        """Command for s3dock against `store` (a dir path or s3://...)."""
        parts = [q(self.bin), "--store", q(store)]
        if store.startswith("s3://"):
            parts += ["--endpoint", q(endpoint or self.endpoint)]
        return " ".join(parts + [q(x) for x in args])

    def run_once(self, cmd):
        """`cmd` is a bash command with {T} where `/usr/bin/time -v -o FILE` goes."""
        rss_file = os.path.join(self.tmp, "rss.txt")
        if os.path.exists(rss_file):
            os.remove(rss_file)
        full = cmd.replace("{T}", f"/usr/bin/time -v -o {q(rss_file)}")
        b0, t0j = cpu_jiffies()
        t0 = time.monotonic()
        try:
            p = subprocess.run(["bash", "-o", "pipefail", "-c", full], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=self.a.timeout, start_new_session=True)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timed out after {self.a.timeout}s: {full}")
        secs = time.monotonic() - t0
        b1, t1j = cpu_jiffies()
        busy = (b1 - b0) / max(1, t1j - t0j) * self.nproc  # cores busy on the whole machine
        if p.returncode != 0:
            raise RuntimeError(f"command failed (exit {p.returncode}): {full}\n{p.stderr.decode(errors='replace')[-3000:]}")
        peak = cpu = None
        if os.path.exists(rss_file):
            txt = open(rss_file).read()
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", txt)
            peak = int(m.group(1)) * 1024 if m else None
            ut = re.search(r"User time \(seconds\): ([\d.]+)", txt)
            st = re.search(r"System time \(seconds\): ([\d.]+)", txt)
            cpu = (float(ut.group(1)) + float(st.group(1))) if ut and st else None
        return secs, peak, cpu, busy, p.stdout.decode(errors="replace")

    def add(self, *args, **kw):
        c = Case(*args, **kw)
        if self.filter is None or self.filter.search(c.name):
            self.cases.append(c)
        return c

    def run_case(self, c, i):
        if c.rec.get("error") or (c.rounds is not None and i >= c.rounds):
            return
        try:
            if c.setup:
                c.setup(i)
            if c.writes:
                # On a KVM guest with free page reporting the host takes freed memory back ~2 s
                # later, and each first touch of a page it must back again costs ~2.5 CPU-s per
                # GiB (dd of 656 MB into a new file: 1.5 s sys; 0.2-0.4 s within seconds of
                # freeing as much). Page-cache writers (s3dock and the floors alike) start after
                # that, so none is measured on pages freed just before by chance.
                time.sleep(self.a.settle)
            basis = c.basis(i) if callable(c.basis) else c.basis
            if not basis:
                raise RuntimeError("nothing to measure (its input case did not run or failed)")
            cmd = c.cmd(i) if callable(c.cmd) else c.cmd
            secs, peak, cpu, busy, out = self.run_once(cmd)
        except Exception as e:  # noqa: BLE001
            log(f"{c.name} round {i + 1}: FAILED: {e}")
            c.rec["error"] = str(e)[:2000]
            return
        finally:
            if c.after:
                try:
                    c.after(i)
                except Exception as e:  # noqa: BLE001
                    log(f"{c.name}: cleanup failed: {e}")
        r = c.rec
        r["basis_bytes"] = basis
        r["runs"].append(round(secs, 3))
        r["rss"].append(peak)
        r["cpu"].append(cpu)
        r["machine_busy"].append(round(busy, 2))
        extra = None
        if c.parse_json:
            for line in out.splitlines()[::-1]:
                if line.startswith("{"):
                    j = json.loads(line)
                    extra = {k: j[k] for k in ("bytes_read", "bytes_uploaded", "blobs_skipped", "seconds", "layers", "zstd_levels") if k in j}
                    break
        if c.out_size:
            try:
                extra = {"bytes_out": int(out.split()[-1])}
            except (ValueError, IndexError):
                pass
        r["extra"].append(extra)
        log(f"{c.name} [{i + 1}]: {secs:.2f}s" + (f", {basis / secs / 1e6:.0f} MB/s" if basis else "")
            + (f", RSS {peak / MiB:.0f} MiB" if peak else "") + (f", cpu {cpu:.1f}s" if cpu is not None else "")
            + f", machine busy {busy:.1f} cores" + (f", {extra}" if extra else ""))

    def run(self):
        log(f"{len(self.cases)} cases x {self.a.runs} rounds")
        for i in range(self.a.runs):
            t0 = time.monotonic()
            for c in self.cases:
                self.run_case(c, i)
                self.finish_records()
                self.save()
            for hook in self.round_end:
                try:
                    hook(i)
                except Exception as e:  # noqa: BLE001
                    log(f"round cleanup failed: {e}")
            log(f"round {i + 1}/{self.a.runs} done in {time.monotonic() - t0:.0f}s")

    def finish_records(self):
        for c in self.cases:
            r = c.rec
            if not r["runs"]:
                continue
            r["median"] = statistics.median(r["runs"])
            r["min"], r["max"] = min(r["runs"]), max(r["runs"])
            r["mb_s"] = r["basis_bytes"] / r["median"] / 1e6 if r["basis_bytes"] else None
            rss = [x for x in r["rss"] if x]
            r["peak_rss"] = max(rss) if rss else None
            cpu = [x for x in r["cpu"] if x is not None]
            r["cpu_median"] = statistics.median(cpu) if cpu else None

    # -------------------------------------------------------------- stores, registry

    def delete_prefix(self, prefix, client=None):
        s3 = client or self.s3
        token = None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            r = s3.list_objects_v2(**kw)
            objs = [{"Key": o["Key"]} for o in r.get("Contents", [])]
            if objs:
                s3.delete_objects(Bucket=self.bucket, Delete={"Objects": objs, "Quiet": True})
            if not r.get("IsTruncated"):
                break
            token = r.get("NextContinuationToken")

    def s3url(self, prefix):
        return f"s3://{self.bucket}/{prefix}"

    @staticmethod
    def rmdir(path):
        shutil.rmtree(path, ignore_errors=True)

    def registry_start(self, *args):
        p = subprocess.run([os.path.join(REPO, "scripts", "registry.sh"), "start", *args],
                           check=True, stdout=subprocess.PIPE, text=True)
        addr = p.stdout.strip().split("=", 1)[1]
        self.registries.append(addr)
        return addr

    def registry_stop(self, addr):
        if not addr:
            return
        subprocess.run([os.path.join(REPO, "scripts", "registry.sh"), "stop", addr], check=False)
        if addr in self.registries:
            self.registries.remove(addr)

    def blob_keys(self, prefix, repo="bench/big", tag="1", client=None):
        """S3 keys of the layer blobs of REPO:TAG in an s3dock store on s3s-fs (via its manifest)."""
        s3 = client or self.s3
        try:
            link = s3.get_object(Bucket=self.bucket,
                                 Key=f"{prefix}/docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/current/link")["Body"].read().decode()
            h = link.strip().split(":", 1)[1]
            m = json.loads(s3.get_object(Bucket=self.bucket,
                                         Key=f"{prefix}/docker/registry/v2/blobs/sha256/{h[:2]}/{h}/data")["Body"].read())
        except Exception:  # noqa: BLE001
            return []
        return [f"{prefix}/docker/registry/v2/blobs/sha256/{l['digest'][7:9]}/{l['digest'][7:]}/data" for l in m["layers"]]

    def blob_bytes(self, prefix, repo="bench/big", client=None):
        s3 = client or self.s3
        keys = self.blob_keys(prefix, repo, client=s3)
        return sum(s3.head_object(Bucket=self.bucket, Key=k)["ContentLength"] for k in keys) if keys else 0

    @staticmethod
    def dir_blob_files(store, repo="bench/big", tag="1"):
        """Layer blob files of REPO:TAG in a directory store (via its manifest)."""
        base = os.path.join(store, "docker", "registry", "v2")
        try:
            link = open(os.path.join(base, "repositories", repo, "_manifests", "tags", tag, "current", "link")).read()
            h = link.strip().split(":", 1)[1]
            m = json.load(open(os.path.join(base, "blobs", "sha256", h[:2], h, "data")))
        except (OSError, ValueError):
            return []
        return [os.path.join(base, "blobs", "sha256", l["digest"][7:9], l["digest"][7:], "data") for l in m["layers"]]

    def curl_config(self, keys, chunk):
        cfg = os.path.join(self.tmp, "curl-ranges.cfg")
        with open(cfg, "w") as f:
            first = True
            for k in keys:
                size = self.s3.head_object(Bucket=self.bucket, Key=k)["ContentLength"]
                url = self.s3.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": k}, ExpiresIn=7200)
                for s in range(0, size, chunk):
                    if not first:
                        f.write("next\n")
                    first = False
                    f.write(f'url = "{url}"\nrange = "{s}-{min(s + chunk, size) - 1}"\noutput = "/dev/null"\n')
        return cfg

    # -------------------------------------------------------------- the cases

    def define(self):
        big, big2, small = self.inputs["big"], self.inputs["big2"], self.inputs["small"]
        A, A2, AS = big["path"], big2["path"], small["path"]
        asz, a2sz, ssz = big["size"], big2["size"], small["size"]
        files_layer, flsz = big["layers"][0]["file"], big["layers"][0]["size"]
        N = self.nproc
        s3d = self.s3dock
        st = self.state
        self.round_end = []

        def push(store, archive, ref, comp="gzip", endpoint=None, extra=()):
            return f"cat {q(archive)} | {{T}} {s3d(store, *extra, '-q', '--json', 'push', ref, '--compression', comp, endpoint=endpoint)}"

        def push_file(store, archive, ref, comp="gzip"):
            return f"{{T}} {s3d(store, '-q', '--json', 'push', ref, '-i', archive, '--compression', comp)}"

        # ---- push to S3 (s3s-fs): cold, warm, second image ------------------------------
        pre = lambda c, i: f"b/s3-{c}-r{i}"  # s3s-fs fails on keys > ~150 bytes: keep prefixes short
        for comp in ("gzip", "zstd"):
            # Unsigned bodies, as over https (the CPU AWS users see); over plain http s3dock
            # also hashes every body for SigV4 by default, as the aws CLI does.
            self.add(f"push.s3.{comp}.cold", "push", f"cat big.tar | s3dock --payload-signing=false push --compression {comp} → s3s-fs (empty store)",
                     lambda i, c=comp: push(self.s3url(pre(c, i)), A, "bench/big:1", c, extra=("--payload-signing=false",)), asz, "archive",
                     setup=lambda i, c=comp: self.delete_prefix(pre(c, i) + "/"), parse_json=True)
            self.add(f"push.s3.{comp}.warm", "push", f"re-push of the same archive ({comp}; every blob already stored)",
                     lambda i, c=comp: push(self.s3url(pre(c, i)), A, "bench/big:1", c), asz, "archive", parse_json=True)
            self.add(f"push.s3.{comp}.warm.file", "push", f"re-push with -i big.tar ({comp}; reads the file, as openssl does)",
                     lambda i, c=comp: push_file(self.s3url(pre(c, i)), A, "bench/big:1", c), asz, "archive", parse_json=True)
        self.add("push.s3.gzip.image2", "push", "push big2.tar (shares the 1.19 GB file layer; new 256 MiB layer)",
                 lambda i: push(self.s3url(pre("gzip", i)), A2, "bench/big:2"), a2sz, "archive", parse_json=True)
        self.add("push.s3.none.cold", "push", "cat big.tar | s3dock push --compression none → s3s-fs (ingest ceiling)",
                 lambda i: push(self.s3url(pre("none", i)), A, "bench/big:1", "none"), asz, "archive",
                 setup=lambda i: self.delete_prefix(pre("none", i) + "/"),
                 after=lambda i: self.delete_prefix(pre("none", i) + "/"), parse_json=True)

        # ---- push to a local directory store ------------------------------------------
        dpath = lambda c, i: os.path.join(self.store_dir, f"dir-{c}-r{i}")
        for comp in ("gzip", "zstd"):
            self.add(f"push.dir.{comp}.cold", "push", f"cat big.tar | s3dock push --compression {comp} → local dir (empty)",
                     lambda i, c=comp: push(dpath(c, i), A, "bench/big:1", c), asz, "archive",
                     setup=lambda i, c=comp: self.rmdir(dpath(c, i)), parse_json=True, writes=True)
            self.add(f"push.dir.{comp}.warm", "push", f"re-push to the local dir ({comp})",
                     lambda i, c=comp: push(dpath(c, i), A, "bench/big:1", c), asz, "archive", parse_json=True)
            self.add(f"push.dir.{comp}.warm.file", "push", f"re-push to the local dir with -i big.tar ({comp})",
                     lambda i, c=comp: push_file(dpath(c, i), A, "bench/big:1", c), asz, "archive", parse_json=True)
        # ---- core scaling (issue 16): a cold dir push with -i big.tar on both cores, then pinned
        # to core 0. -i, not cat |: a cat beside a pinned push would run free on the other core.
        for comp in ("gzip", "zstd"):
            for cores, pin in (("cores2", ""), ("core0", "taskset -c 0 ")):
                d = lambda c, i, cores=cores: os.path.join(self.store_dir, f"dir-{c}-{cores}-r{i}")
                self.add(f"push.dir.{comp}.{cores}", "push",
                         f"cold push -i big.tar {comp} → local dir, " + ("s3dock under taskset -c 0 (one core)" if pin else "both cores"),
                         lambda i, c=comp, d=d, pin=pin: f"{{T}} {pin}{s3d(d(c, i), '-q', '--json', 'push', 'bench/big:1', '-i', A, '--compression', c)}",
                         asz, "archive", setup=lambda i, c=comp, d=d: self.rmdir(d(c, i)),
                         after=lambda i, c=comp, d=d: self.rmdir(d(c, i)), parse_json=True)
        self.add("push.dir.gzip.image2", "push", "push big2.tar to the local dir",
                 lambda i: push(dpath("gzip", i), A2, "bench/big:2"), a2sz, "archive", parse_json=True)

        # ---- small image ---------------------------------------------------------------
        self.add("push.s3.gzip.small", "push", "cat small-image.tar (5.5 MB) | s3dock push → s3s-fs (empty)",
                 lambda i: push(self.s3url(f"b/small-r{i}"), AS, "bench/small:1"), ssz, "archive",
                 setup=lambda i: self.delete_prefix(f"b/small-r{i}/"), parse_json=True)
        self.add("pull.s3.gzip.small", "pull", "s3dock pull bench/small:1 > /dev/null",
                 lambda i: f"{{T}} {s3d(self.s3url(f'b/small-r{i}'), '-q', 'pull', 'bench/small:1')} > /dev/null",
                 lambda i: self.blob_bytes(f"b/small-r{i}", "bench/small"), "stored blobs",
                 after=lambda i: self.delete_prefix(f"b/small-r{i}/"))

        # ---- pulls -----------------------------------------------------------------------
        outf = os.path.join(self.out_dir, "pulled.tar")

        def rm_out(i):
            if os.path.exists(outf):
                os.remove(outf)

        gz_bytes = lambda i: self.blob_bytes(pre("gzip", i))
        zs_bytes = lambda i: self.blob_bytes(pre("zstd", i))
        for comp, variants, nbytes in (
            ("gzip", ("devnull", "file", "decompress.devnull", "decompress.file"), gz_bytes),
            ("zstd", ("devnull", "decompress.devnull", "decompress.file"), zs_bytes),
        ):
            for v in variants:
                args = ["-q", "pull", "bench/big:1"] + (["--decompress"] if "decompress" in v else []) \
                    + (["-o", outf] if v.endswith("file") else [])
                redirect = " > /dev/null" if v.endswith("devnull") else ""
                what = {"devnull": "> /dev/null", "file": "-o FILE (s3dock fsyncs FILE)",
                        "decompress.devnull": "--decompress > /dev/null (plain layers)",
                        "decompress.file": "--decompress -o FILE (plain layers, like skopeo's docker-archive)"}[v]
                self.add(f"pull.s3.{comp}.{v}", "pull", f"s3dock pull bench/big:1 {what} ({comp} layers, s3s-fs)",
                         lambda i, c=comp, a=args, r=redirect: f"{{T}} {s3d(self.s3url(pre(c, i)), *a)}{r}",
                         nbytes, "stored blobs", setup=rm_out, after=rm_out, writes=v.endswith("file"))
        self.add("pull.dir.gzip.devnull", "pull", "s3dock pull > /dev/null from the local dir store (gzip layers)",
                 lambda i: f"{{T}} {s3d(dpath('gzip', i), '-q', 'pull', 'bench/big:1')} > /dev/null", gz_bytes, "stored blobs")

        # ---- Garage (issue 16): a production S3 server --------------------------------------
        if self.garage:
            gpre = lambda i: f"b/garage-r{i}"
            self.add("push.garage.gzip.cold", "garage", "cat big.tar | s3dock push --compression gzip → Garage (empty store)",
                     lambda i: push(self.s3url(gpre(i)), A, "bench/big:1", "gzip", endpoint=self.garage), asz, "archive",
                     setup=lambda i: self.delete_prefix(gpre(i) + "/", self.garage_s3), parse_json=True)
            self.add("push.garage.gzip.warm", "garage", "re-push of the same archive → Garage (every blob stored)",
                     lambda i: push(self.s3url(gpre(i)), A, "bench/big:1", "gzip", endpoint=self.garage), asz, "archive",
                     parse_json=True)
            self.add("pull.garage.gzip.devnull", "garage", "s3dock pull bench/big:1 > /dev/null from Garage (gzip layers)",
                     lambda i: f"{{T}} {s3d(self.s3url(gpre(i)), '-q', 'pull', 'bench/big:1', endpoint=self.garage)} > /dev/null",
                     lambda i: self.blob_bytes(gpre(i), client=self.garage_s3), "stored blobs",
                     after=lambda i: self.delete_prefix(gpre(i) + "/", self.garage_s3))

        # ---- CPU floors (issue 16): one-thread compressor/decompressor CPU on the same bytes -------
        dblobs = lambda c, i: " ".join(q(f) for f in self.dir_blob_files(dpath(c, i)))
        dbytes = lambda c: lambda i: sum(os.path.getsize(f) for f in self.dir_blob_files(dpath(c, i)))
        self.add("floor.openssl.archive", "floor", "openssl dgst -sha256 big.tar (sha256 CPU per byte)",
                 f"{{T}} openssl dgst -sha256 {q(A)} >/dev/null", asz, "archive", tool="openssl")
        self.add("floor.openssl.pipe", "floor", "cat big.tar | openssl dgst -sha256 (sha256 of a piped archive, as the cat | push cases read it)",
                 f"cat {q(A)} | {{T}} openssl dgst -sha256 >/dev/null", asz, "archive", tool="openssl")
        self.add("floor.pigz1.archive", "floor", "pigz -p1 -1 on big.tar (one thread)",
                 f"{{T}} pigz -p1 -1 -c {q(A)} | wc -c", asz, "archive", tool="pigz", out_size=True)
        self.add("floor.zstd1.archive", "floor", "zstd -T1 -3 on big.tar (one thread)",
                 f"{{T}} zstd -q -T1 -3 -c {q(A)} | wc -c", asz, "archive", tool="zstd", out_size=True)
        # The same into a file, as a push to the dir store writes its blobs: new page-cache pages
        # cost more than a pipe's reused ones (run_case says how much, and why they settle first).
        fz = os.path.join(self.out_dir, "floor-out")
        drop_fz = lambda i: os.path.exists(fz) and os.remove(fz)
        for tool, comp in (("pigz", "pigz -p1 -1"), ("zstd", "zstd -q -T1 -3")):
            self.add(f"floor.{tool}1.file", "floor", f"{comp} on big.tar > FILE (one thread)",
                     f"{{T}} sh -c {q(f'{comp} -c {q(A)} > {q(fz)}')}", asz, "archive", tool=tool,
                     setup=drop_fz, after=drop_fz, writes=True)
        self.add("floor.gunzip.blobs", "floor", "pigz -p1 -dc of the stored gzip layer blobs (one thread)",
                 lambda i: f"{{T}} pigz -p1 -dc {dblobs('gzip', i)} | wc -c", dbytes("gzip"), "stored blobs",
                 tool="pigz", out_size=True)
        self.add("floor.unzstd.blobs", "floor", "zstd -T1 -dc of the stored zstd layer blobs",
                 lambda i: f"{{T}} zstd -q -T1 -dc {dblobs('zstd', i)} | wc -c", dbytes("zstd"), "stored blobs",
                 tool="zstd", out_size=True)
        # The same into a file made durable: what a decompressing pull -o FILE cannot avoid either.
        ff = os.path.join(self.out_dir, "floor-plain.tar")
        drop_ff = lambda i: os.path.exists(ff) and os.remove(ff)
        for c, tool, dec in (("gzip", "pigz", "pigz -p1 -dc"), ("zstd", "zstd", "zstd -q -T1 -dc")):
            self.add(f"floor.{'gunzip' if c == 'gzip' else 'unzstd'}.file", "floor",
                     f"{dec} of the stored {c} layer blobs > FILE, then sync FILE (one thread)",
                     lambda i, c=c, dec=dec: f"{{T}} sh -c {q(f'{dec} {dblobs(c, i)} > {q(ff)} && sync {q(ff)}')}",
                     dbytes(c), "stored blobs", tool=tool, setup=drop_ff, after=drop_ff, writes=True)

        if self.a.no_baselines:
            self.round_end.append(self.end_round)
            return

        # ---- baselines: local CPU ---------------------------------------------------------
        self.add("base.openssl.archive", "baseline", "openssl dgst -sha256 big.tar",
                 f"{{T}} openssl dgst -sha256 {q(A)} >/dev/null", asz, "archive", tool="openssl")
        self.add("base.sha256sum.archive", "baseline", "sha256sum big.tar",
                 f"{{T}} sha256sum {q(A)} >/dev/null", asz, "archive", tool="sha256sum")
        self.add("base.pigz.layer", "baseline", f"pigz -p{N} -1 on the file layer",
                 f"{{T}} pigz -p{N} -1 -c {q(files_layer)} | wc -c", flsz, "file layer", tool="pigz", out_size=True)
        self.add("base.pigz.archive", "baseline", f"pigz -p{N} -1 on big.tar (same bytes as the push)",
                 f"{{T}} pigz -p{N} -1 -c {q(A)} | wc -c", asz, "archive", tool="pigz", out_size=True)
        self.add("base.zstd.layer", "baseline", f"zstd -T0 -3 on the file layer (-T0 = {N} threads here)",
                 f"{{T}} zstd -q -T0 -3 -c {q(files_layer)} | wc -c", flsz, "file layer", tool="zstd", out_size=True)
        self.add("base.zstd.archive", "baseline", f"zstd -T{N} -3 on big.tar (same bytes as the push)",
                 f"{{T}} zstd -q -T{N} -3 -c {q(A)} | wc -c", asz, "archive", tool="zstd", out_size=True)

        # ---- baselines: upload ----------------------------------------------------------------
        awscp = f"{q(self.aws)} --endpoint-url {q(self.endpoint)} s3 cp --only-show-errors"
        key = lambda n, i: f"b/base/{n}-r{i}"
        self.add("base.awscp.archive", "baseline", "aws s3 cp big.tar s3://… (plain upload, no compression)",
                 lambda i: f"{{T}} {awscp} {q(A)} s3://{self.bucket}/{key('plain.tar', i)}", asz, "archive",
                 after=lambda i: self.delete_prefix(key("plain.tar", i)), tool="aws")
        self.add("base.gzip_aws", "baseline", "cat big.tar | gzip -1 | aws s3 cp - s3://…",
                 lambda i: f"cat {q(A)} | gzip -1 | {{T}} {awscp} - s3://{self.bucket}/{key('gz.tar.gz', i)}", asz, "archive",
                 after=lambda i: self.delete_prefix(key("gz.tar.gz", i)), tool="aws")
        self.add("base.pigz_aws", "baseline", f"cat big.tar | pigz -p{N} -1 | aws s3 cp - s3://…",
                 lambda i: f"cat {q(A)} | pigz -p{N} -1 | {{T}} {awscp} - s3://{self.bucket}/{key('pigz.tar.gz', i)}", asz, "archive",
                 after=lambda i: self.delete_prefix(key("pigz.tar.gz", i)), tool="aws")

        # ---- pull baselines: parallel ranged GETs of the same blobs from the same server ---
        rg = os.path.join(HERE, "rangedget.py")
        keys = lambda i: " ".join(q(k) for k in self.blob_keys(pre("gzip", i)))
        self.add("base.rangedget.boto3", "baseline", "boto3: 4 parallel 16 MiB ranged GETs per blob (the same gzip blobs)",
                 lambda i: f"{{T}} {q(self.py)} {q(rg)} {q(self.endpoint)} {q(self.bucket)} 4 {16 * MiB} {keys(i)} >/dev/null",
                 gz_bytes, "stored blobs", tool="python/boto3")
        self.add("base.rangedget.boto3.j8", "baseline", "boto3: 8 parallel 16 MiB ranged GETs per blob",
                 lambda i: f"{{T}} {q(self.py)} {q(rg)} {q(self.endpoint)} {q(self.bucket)} 8 {16 * MiB} {keys(i)} >/dev/null",
                 gz_bytes, "stored blobs", tool="python/boto3")
        self.add("base.rangedget.curl", "baseline", "curl -Z --parallel-max 4: 16 MiB ranged GETs (presigned URLs)",
                 lambda i: f"{{T}} curl -sS --fail -Z --parallel-max 4 -K {q(self.curl_config(self.blob_keys(pre('gzip', i)), 16 * MiB))}",
                 gz_bytes, "stored blobs", tool="curl")
        self.add("base.awscp.download", "baseline", "aws s3 cp s3://…/blob - > /dev/null per blob (awscli multipart download)",
                 lambda i: "{T} bash -c " + q(" && ".join(f"{awscp} s3://{self.bucket}/{q(k)} - >/dev/null" for k in self.blob_keys(pre("gzip", i)))),
                 gz_bytes, "stored blobs", tool="aws")

        # ---- skopeo / registry:2 ---------------------------------------------------------------
        regdir = lambda i: os.path.join(self.work, f"registry-fs-r{i}")

        def fs_registry(i):
            self.rmdir(regdir(i))
            st["fs_reg"] = self.registry_start("fs", regdir(i))

        # distribution's S3 driver cannot push into s3s-fs (no ListMultipartUploads): filesystem driver.
        self.add("base.skopeo.push.fs", "baseline",
                 "skopeo copy docker-archive:big.tar docker://registry:2 (filesystem driver; skopeo's default gzip)",
                 lambda i: f"{{T}} skopeo copy -q --dest-tls-verify=false docker-archive:{q(A)} docker://{st['fs_reg']}/bench/big-r{i}:1",
                 asz, "archive", setup=fs_registry, tool="skopeo")
        sk = os.path.join(self.out_dir, "skopeo.tar")

        def rm_sk(i):
            if os.path.exists(sk):
                os.remove(sk)
            self.rmdir(sk + ".d")

        self.add("base.skopeo.pull.fs", "baseline",
                 "skopeo copy docker://registry:2 (filesystem driver) docker-archive:FILE (plain layers)",
                 lambda i: f"{{T}} skopeo copy -q --src-tls-verify=false docker://{st['fs_reg']}/bench/big-r{i}:1 docker-archive:{q(sk)}:bench/big:1",
                 asz, "archive", setup=rm_sk, after=rm_sk, tool="skopeo")

        def s3_registry(i):
            rm_sk(i)
            if not st.get("s3_reg"):
                # registry:2 with the S3 driver serving s3dock's own store on s3s-fs: the very same blobs.
                st["s3_reg"] = self.registry_start("s3", self.endpoint, self.bucket, "/" + pre("gzip", i))

        self.add("base.skopeo.pull.s3", "baseline",
                 "skopeo copy docker://registry:2 (S3 driver on s3s-fs, serving s3dock's store) docker-archive:FILE",
                 lambda i: f"{{T}} skopeo copy -q --src-tls-verify=false docker://{st['s3_reg']}/bench/big:1 docker-archive:{q(sk)}:bench/big:1",
                 gz_bytes, "stored blobs", setup=s3_registry, after=rm_sk, tool="skopeo")
        self.add("base.skopeo.pull.s3.dir", "baseline",
                 "skopeo copy docker://registry:2 (S3 driver, s3s-fs) dir:DIR (layers stay compressed)",
                 lambda i: f"{{T}} skopeo copy -q --src-tls-verify=false docker://{st['s3_reg']}/bench/big:1 dir:{q(sk)}.d",
                 gz_bytes, "stored blobs", setup=s3_registry, after=rm_sk, tool="skopeo")

        # ---- small image via moto, where the registry's S3 driver can push ----------------------
        if self.moto:
            def moto_registry(i):
                self.delete_prefix(f"b/moto-reg-r{i}/", self.moto_s3)
                st["moto_reg"] = self.registry_start("s3", self.moto, self.bucket, f"/b/moto-reg-r{i}")

            self.add("push.moto.gzip.small", "push", "cat small-image.tar | s3dock push → moto (empty)",
                     lambda i: f"cat {q(AS)} | {{T}} {s3d(self.s3url(f'b/moto-small-r{i}'), '-q', '--json', 'push', 'bench/small:1', endpoint=self.moto)}",
                     ssz, "archive", setup=lambda i: self.delete_prefix(f"b/moto-small-r{i}/", self.moto_s3),
                     after=lambda i: self.delete_prefix(f"b/moto-small-r{i}/", self.moto_s3), parse_json=True)
            self.add("base.skopeo.push.moto.small", "baseline",
                     "skopeo copy docker-archive:small-image.tar docker://registry:2 (S3 driver on moto)",
                     lambda i: f"{{T}} skopeo copy -q --dest-tls-verify=false docker-archive:{q(AS)} docker://{st['moto_reg']}/bench/small-r{i}:1",
                     ssz, "archive", setup=moto_registry,
                     after=lambda i: self.delete_prefix(f"b/moto-reg-r{i}/", self.moto_s3), tool="skopeo")

        self.round_end.append(self.end_round)

    def end_round(self, i):
        """Drops everything round i stored."""
        for k in ("fs_reg", "s3_reg", "moto_reg"):
            self.registry_stop(self.state.pop(k, None))
        self.rmdir(os.path.join(self.work, f"registry-fs-r{i}"))
        if not self.a.keep_stores:
            if self.garage_s3:
                self.delete_prefix(f"b/garage-r{i}/", self.garage_s3)
            for c in ("gzip", "zstd", "none"):
                self.delete_prefix(f"b/s3-{c}-r{i}/")
                self.rmdir(os.path.join(self.store_dir, f"dir-{c}-r{i}"))

    def define_scale(self):
        """The 6 GiB-layer image (--scale): one round."""
        sc = self.inputs.get("scale")
        if not sc:
            return
        S, ssz = sc["path"], sc["size"]
        N = self.nproc
        pre = "b/scale"
        d = os.path.join(self.store_dir, "dir-scale")
        push = lambda store, comp="gzip": f"cat {q(S)} | {{T}} {self.s3dock(store, '-q', '--json', 'push', 'bench/scale:1', '--compression', comp)}"
        one = 1
        self.add("scale.push.s3.gzip", "scale", "6 GiB layer: cat scale.tar | s3dock push → s3s-fs (gzip blob > 5 GiB: multipart copy)",
                 push(self.s3url(pre)), ssz, "archive", rounds=one, setup=lambda i: self.delete_prefix(pre + "/"), parse_json=True)
        self.add("scale.push.s3.gzip.warm", "scale", "6 GiB layer: warm re-push → s3s-fs",
                 push(self.s3url(pre)), ssz, "archive", rounds=one, parse_json=True)
        self.add("scale.pull.s3.gzip.devnull", "scale", "6 GiB layer: s3dock pull > /dev/null",
                 f"{{T}} {self.s3dock(self.s3url(pre), '-q', 'pull', 'bench/scale:1')} > /dev/null",
                 lambda i: self.blob_bytes(pre, "bench/scale"), "stored blobs", rounds=one,
                 after=lambda i: self.delete_prefix(pre + "/"))
        self.add("scale.push.s3.none", "scale", "6 GiB layer: push --compression none → s3s-fs (digest known: straight to the final key)",
                 push(self.s3url(pre), "none"), ssz, "archive", rounds=one,
                 setup=lambda i: self.delete_prefix(pre + "/"), after=lambda i: self.delete_prefix(pre + "/"), parse_json=True)
        self.add("scale.push.dir.gzip", "scale", "6 GiB layer: push → local dir",
                 push(d), ssz, "archive", rounds=one, setup=lambda i: self.rmdir(d), after=lambda i: self.rmdir(d), parse_json=True)
        self.add("scale.base.pigz", "scale", f"pigz -p{N} -1 on scale.tar", f"{{T}} pigz -p{N} -1 -c {q(S)} | wc -c",
                 ssz, "archive", rounds=one, tool="pigz", out_size=True)

    def link_at(self, mbit):
        if self.link is None:
            link = LinkNet(self.work, self.bucket)
            try:
                link.up()
            except BaseException:
                link.down()  # a half-started namespace is not reused by the next case
                raise
            self.link = link
        if self.link.mbit != mbit:
            self.link.rate(mbit)

    def link_fresh_registry(self, mbit):
        """Empties the namespace's registry: skopeo would otherwise mount the blobs an earlier
        rate's push left there instead of sending them."""
        self.link_at(mbit)
        for e in os.listdir(os.path.join(self.work, "link", "registry")) if os.path.isdir(os.path.join(self.work, "link", "registry")) else []:
            self.rmdir(os.path.join(self.work, "link", "registry", e))

    def define_link(self):
        """Link-bound transfers (issue 16): s3dock vs aws s3 cp vs skopeo → registry:2 through a
        tbf-limited veth pair to servers in a namespace of the bench's own; one round per rate."""
        if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
            log("link cases skipped: need root, ip and tc")
            return
        big, many = self.inputs["big"], self.inputs.get("many")
        A, asz = big["path"], big["size"]
        s3d = self.s3dock
        runs = self.a.link_runs
        awscp = lambda: f"{q(self.aws)} --endpoint-url {q(self.link.endpoint)} s3 cp --only-show-errors"
        for mbit in self.a.link_rates:
            lp = lambda what, m=mbit: f"b/l{m}-{what}"
            ls3 = lambda: self.link.s3
            # s3s-fs, or with garage=True the namespace's Garage: (endpoint, boto3 client)
            server = lambda garage: (self.link.garage, self.link.garage_s3) if garage else (self.link.endpoint, self.link.s3)

            def clear(what, m=mbit, garage=False):
                def f(i):
                    self.link_at(m)
                    self.delete_prefix(lp(what, m) + "/", server(garage)[1])
                return f

            def lpush(archive, ref, comp, what, m=mbit, garage=False, level=()):
                return lambda i: f"cat {q(archive)} | {{T}} {s3d(self.s3url(lp(what, m)), '-q', '--json', 'push', ref, '--compression', comp, *level, endpoint=server(garage)[0])}"

            def lpull(ref, what, m=mbit, garage=False):
                return lambda i: f"{{T}} {s3d(self.s3url(lp(what, m)), '-q', 'pull', ref, endpoint=server(garage)[0])} > /dev/null"

            pfx = f"link.{mbit}"
            self.add(f"{pfx}.push.none", "link", f"{mbit} Mbit/s: s3dock push --compression none big.tar (transfer only)",
                     lpush(A, "bench/big:1", "none", "none"), asz, "archive", setup=clear("none"),
                     after=clear("none"), parse_json=True, rounds=runs)
            self.add(f"{pfx}.push.gzip", "link", f"{mbit} Mbit/s: s3dock push --compression gzip big.tar",
                     lpush(A, "bench/big:1", "gzip", "gzip"), asz, "archive", setup=clear("gzip"), parse_json=True, rounds=runs)
            self.add(f"{pfx}.pull.gzip", "link", f"{mbit} Mbit/s: s3dock pull bench/big:1 > /dev/null (gzip layers, verified)",
                     lpull("bench/big:1", "gzip"),
                     lambda i, m=mbit: self.blob_bytes(lp("gzip", m), client=ls3()), "stored blobs", rounds=runs)
            self.add(f"{pfx}.awscp.down", "link", f"{mbit} Mbit/s: aws s3 cp s3://…/blob - > /dev/null per gzip blob",
                     lambda i, m=mbit: "{T} bash -c " + q(" && ".join(f"{awscp()} s3://{self.bucket}/{q(k)} - >/dev/null" for k in self.blob_keys(lp("gzip", m), client=ls3()))),
                     lambda i, m=mbit: self.blob_bytes(lp("gzip", m), client=ls3()), "stored blobs", tool="aws", rounds=runs,
                     after=clear("gzip"))
            for comp in ("zstd", "auto"):
                self.add(f"{pfx}.push.{comp}", "link", f"{mbit} Mbit/s: s3dock push --compression {comp} big.tar",
                         lpush(A, "bench/big:1", comp, comp), asz, "archive", setup=clear(comp), after=clear(comp),
                         parse_json=True, rounds=runs)
            for lvl in self.a.link_zstd_levels:
                self.add(f"{pfx}.push.zstd{lvl}", "link", f"{mbit} Mbit/s: s3dock push --compression zstd --level {lvl} big.tar (a fixed level, for auto)",
                         lpush(A, "bench/big:1", "zstd", f"zstd{lvl}", level=("--level", str(lvl))), asz, "archive",
                         setup=clear(f"zstd{lvl}"), after=clear(f"zstd{lvl}"), parse_json=True, rounds=runs)
            self.add(f"{pfx}.awscp.up", "link", f"{mbit} Mbit/s: aws s3 cp big.tar s3://… (no compression)",
                     lambda i, m=mbit: f"{{T}} {awscp()} {q(A)} s3://{self.bucket}/{lp('aws', m)}/big.tar", asz, "archive",
                     setup=clear("aws"), after=clear("aws"), tool="aws", rounds=runs)
            sk = os.path.join(self.out_dir, "link-skopeo.d")
            self.add(f"{pfx}.skopeo.push", "link", f"{mbit} Mbit/s: skopeo copy docker-archive:big.tar docker://registry:2 (fs driver, in the namespace; gzip)",
                     lambda i, m=mbit: f"{{T}} skopeo copy -q --dest-tls-verify=false docker-archive:{q(A)} docker://{self.link.registry}/bench/big-l{m}-r{i}:1",
                     asz, "archive", setup=lambda i, m=mbit: self.link_fresh_registry(m), tool="skopeo", rounds=runs)
            self.add(f"{pfx}.skopeo.pull", "link", f"{mbit} Mbit/s: skopeo copy docker://registry:2 dir:DIR (layers stay compressed)",
                     lambda i, m=mbit: f"{{T}} skopeo copy -q --src-tls-verify=false docker://{self.link.registry}/bench/big-l{m}-r{i}:1 dir:{q(sk)} && du -sb {q(sk)} | cut -f1",
                     asz, "archive", setup=lambda i: self.rmdir(sk), after=lambda i: self.rmdir(sk), tool="skopeo",
                     out_size=True, rounds=runs)
            if os.path.exists(LinkNet.GARAGE_BIN):
                for comp in ("none", "gzip"):
                    self.add(f"{pfx}.garage.push.{comp}", "link", f"{mbit} Mbit/s → Garage: s3dock push --compression {comp} big.tar",
                             lpush(A, "bench/big:1", comp, comp, garage=True), asz, "archive",
                             setup=clear(comp, garage=True), parse_json=True, rounds=runs)
                    self.add(f"{pfx}.garage.pull.{comp}", "link", f"{mbit} Mbit/s ← Garage: s3dock pull bench/big:1 > /dev/null ({comp} layers, verified)",
                             lpull("bench/big:1", comp, garage=True),
                             lambda i, c=comp, m=mbit: self.blob_bytes(lp(c, m), client=server(True)[1]), "stored blobs",
                             after=clear(comp, garage=True), rounds=runs)
                for comp in ("zstd", "auto"):
                    self.add(f"{pfx}.garage.push.{comp}", "link", f"{mbit} Mbit/s → Garage: s3dock push --compression {comp} big.tar",
                             lpush(A, "bench/big:1", comp, comp, garage=True), asz, "archive",
                             setup=clear(comp, garage=True), after=clear(comp, garage=True), parse_json=True, rounds=runs)
            if many:
                M, msz = many["path"], many["size"]
                self.add(f"{pfx}.many.push", "link", f"{mbit} Mbit/s: s3dock push (gzip) of many.tar, {len(many['layers'])} layers of 100 KiB-2 MiB",
                         lpush(M, "bench/many:1", "gzip", "many"), msz, "archive", setup=clear("many"), parse_json=True, rounds=runs)
                self.add(f"{pfx}.many.pull", "link", f"{mbit} Mbit/s: s3dock pull bench/many:1 > /dev/null",
                         lpull("bench/many:1", "many"),
                         lambda i, m=mbit: self.blob_bytes(lp("many", m), "bench/many", client=ls3()), "stored blobs",
                         after=clear("many"), rounds=runs)

    def define_scale_garage(self):
        """The 6 GiB-layer image on Garage (--scale, Garage running): push (temp key + multipart
        server-side copy to the digest key), the copy alone, pull; one round."""
        sc = self.inputs.get("scale")
        if not sc or not self.garage:
            return
        S, ssz = sc["path"], sc["size"]
        pre = "b/garage-scale"
        gs3 = self.garage_s3
        self.add("scale.push.garage.gzip", "scale", "6 GiB layer: cat scale.tar | s3dock push → Garage (gzip blob > 5 GiB: multipart copy)",
                 f"cat {q(S)} | {{T}} {self.s3dock(self.s3url(pre), '-q', '--json', 'push', 'bench/scale:1', endpoint=self.garage)}",
                 ssz, "archive", rounds=1, setup=lambda i: self.delete_prefix(pre + "/", gs3), parse_json=True)
        copy = os.path.join(HERE, "s3copy.py")
        self.add("scale.copy.garage", "scale", "the same server-side move alone: UploadPartCopy of the stored 6 GiB blob (512 MiB parts, 4 at a time)",
                 lambda i: f"{{T}} {q(self.py)} {q(copy)} {q(self.garage)} {q(self.bucket)} {q(self.blob_keys(pre, 'bench/scale', client=gs3)[0])} b/garage-copy-test",
                 lambda i: self.blob_bytes(pre, "bench/scale", client=gs3), "stored blobs", rounds=1, tool="python/boto3")
        self.add("scale.pull.garage.gzip.devnull", "scale", "6 GiB layer: s3dock pull > /dev/null from Garage",
                 f"{{T}} {self.s3dock(self.s3url(pre), '-q', 'pull', 'bench/scale:1', endpoint=self.garage)} > /dev/null",
                 lambda i: self.blob_bytes(pre, "bench/scale", client=gs3), "stored blobs", rounds=1,
                 after=lambda i: self.delete_prefix(pre + "/", gs3))

    def cleanup(self):
        if self.link:
            self.link.down()
            self.link = None
        for addr in list(self.registries):
            self.registry_stop(addr)
        if not self.a.keep_stores:
            try:
                self.delete_prefix("b/")
            except Exception:  # noqa: BLE001
                pass
            self.rmdir(self.store_dir)
            self.rmdir(self.out_dir)

    # -------------------------------------------------------------- results

    def machine(self):
        mem = model = ""
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        flags = sh_out("grep -m1 '^flags' /proc/cpuinfo")
        return {
            "nproc": self.nproc,
            "cpu_model": model,
            "cpu_sha_ni": " sha_ni" in flags,
            "memory": mem,
            "kernel": platform.release(),
            "hypervisor": sh_out("lscpu | sed -n 's/^Hypervisor vendor: *//p'"),
            "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "s3dock_commit": self.a.s3dock_source or sh_out(f"git -C {q(REPO)} describe --always --dirty"),
            "s3dock_sha256": sh_out(f"sha256sum {q(self.bin)}").split(" ")[0][:16],
            "tools": {
                "pigz": sh_out("pigz --version 2>&1"),
                "zstd": sh_out("zstd --version 2>&1 | head -1"),
                "openssl": sh_out("openssl version"),
                "skopeo": sh_out("skopeo --version"),
                "aws": sh_out(f"{q(self.aws)} --version 2>&1"),
                "registry": sh_out("docker-registry --version 2>&1 || registry --version 2>&1"),
                "s3s-fs": "0.14.1 (scripts/setup.sh)",
                "curl": sh_out("curl --version | head -1"),
                "rustc": sh_out("rustc --version"),
            },
        }

    def save(self):
        os.makedirs(self.a.results, exist_ok=True)
        doc = {
            "machine": self._machine,
            "config": {"runs": self.a.runs, "work": self.work, "scale": self.a.scale, "s3dock_jobs": 4,
                       "link_rates": self.a.link_rates, "link_runs": self.a.link_runs, "garage": bool(self.garage),
                       "part_size": "16MiB", "store_s3": "s3s-fs 0.14.1 on 127.0.0.1",
                       "inputs": {k: {"size": v["size"], "layers": [l["size"] for l in v["layers"]]}
                                  for k, v in self.inputs.items()}},
            "cases": [c.rec for c in self.cases],
            "targets": self._targets,
        }
        tmp = os.path.join(self.a.results, "latest.json.tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, os.path.join(self.a.results, "latest.json"))

    def targets(self):
        R = {c.name: c.rec for c in self.cases}

        def ratios(num, den):
            """Throughput of `num` over `den` (same bytes): ratio of medians, and median of per-round ratios."""
            a, b = R.get(num, {}), R.get(den, {})
            if not a.get("runs") or not b.get("runs"):
                return None, None
            ba, bb = a["basis_bytes"], b["basis_bytes"]
            whole = (ba / a["median"]) / (bb / b["median"])
            per = [(ba / x) / (bb / y) for x, y in zip(a["runs"], b["runs"])]
            return whole, statistics.median(per) if per else None

        out = []

        def t(tid, desc, pair, goal, cmp=">=", primary=True, note="", value=None):
            whole, paired = pair if pair else (value, None)
            met = None if whole is None else {">=": whole >= goal, "<": whole < goal, "<=": whole <= goal}[cmp]
            out.append({"id": tid, "target": desc, "value": whole, "paired_median": paired, "goal": goal, "cmp": cmp,
                        "met": met, "primary": primary, "note": note})

        def sizes(push, base):
            up = next((e.get("bytes_uploaded") for e in R.get(push, {}).get("extra", []) if e), None)
            out = next((e.get("bytes_out") for e in R.get(base, {}).get("extra", []) if e), None)
            return f"output {up / 1e6:.0f} MB vs {out / 1e6:.0f} MB" if up and out else ""

        for store, primary in (("s3", True), ("dir", False)):
            t(f"gzip-vs-pigz.{store}", f"push gzip ({store}) vs pigz -p{self.nproc} -1 on the same archive bytes",
              ratios(f"push.{store}.gzip.cold", "base.pigz.archive"), 0.85, primary=primary,
              note=sizes(f"push.{store}.gzip.cold", "base.pigz.archive"))
            t(f"zstd-vs-zstd.{store}", f"push zstd ({store}) vs zstd -T{self.nproc} -3 on the same archive bytes",
              ratios(f"push.{store}.zstd.cold", "base.zstd.archive"), 0.85, primary=primary,
              note=sizes(f"push.{store}.zstd.cold", "base.zstd.archive"))
            t(f"warm-vs-openssl.{store}", f"warm re-push ({store}) vs openssl dgst -sha256 on the archive",
              ratios(f"push.{store}.gzip.warm", "base.openssl.archive"), 0.7, primary=primary)
        t("gzip-vs-gzip_aws", "push gzip (s3) speed-up over cat | gzip -1 | aws s3 cp -",
          ratios("push.s3.gzip.cold", "base.gzip_aws"), 2.5)
        t("gzip-vs-pigz_aws", "push gzip (s3) speed-up over cat | pigz -1 | aws s3 cp - (no target; context)",
          ratios("push.s3.gzip.cold", "base.pigz_aws"), 1.0, primary=False)
        for n in ("push.s3.gzip.warm", "push.s3.zstd.warm", "push.dir.gzip.warm", "push.dir.zstd.warm"):
            ex = [e for e in R.get(n, {}).get("extra", []) if e]
            if ex:
                t(f"warm-zero-upload.{n}", f"{n}: layer bytes uploaded", None, 1, cmp="<",
                  primary=n.startswith("push.s3"), value=max(e.get("bytes_uploaded", 0) for e in ex))
        gets = [n for n in ("base.rangedget.boto3", "base.rangedget.boto3.j8", "base.rangedget.curl") if R.get(n, {}).get("runs")]
        best = max(gets, key=lambda n: R[n]["mb_s"], default=None)
        if best:
            for n, prim in (("pull.s3.gzip.devnull", True), ("pull.s3.gzip.file", False), ("pull.s3.zstd.devnull", False)):
                t(f"pull-vs-rangedget.{n}", f"{n} vs the fastest parallel ranged GET baseline ({best})",
                  ratios(n, best), 0.8, primary=prim)
        for n, base, prim, note in (
            ("pull.s3.gzip.file", "base.skopeo.pull.s3", True, "both write a loadable archive file; skopeo's has plain layers"),
            ("pull.s3.gzip.decompress.file", "base.skopeo.pull.s3", False, "like for like: both write plain layers"),
            ("pull.s3.gzip.devnull", "base.skopeo.pull.s3.dir", False, "both keep the layers compressed"),
        ):
            t(f"pull-vs-skopeo.{n}", f"{n} speed-up over {base}", ratios(n, base), 2.0, primary=prim, note=note)
        out.extend(self.targets16(R))
        worst = max(((R[n].get("peak_rss") or 0, n) for n in R if R[n]["tool"] == "s3dock"), default=(None, None))
        if worst[0]:
            t("rss", f"peak RSS (MiB) over every s3dock case (worst: {worst[1]})", None, 300, cmp="<", value=worst[0] / MiB)
        return out

    def targets16(self, R):
        """Issue 16: CPU efficiency against one-thread floors, core scaling, link-bound transfers."""
        out = []

        def t(tid, desc, value, goal, cmp, primary=True, note=""):
            met = None if value is None else {">=": value >= goal, "<": value < goal, "<=": value <= goal}[cmp]
            out.append({"id": tid, "target": desc, "value": value, "paired_median": None, "goal": goal, "cmp": cmp,
                        "met": met, "primary": primary, "note": note})

        cpu = lambda n: R.get(n, {}).get("cpu_median")
        med = lambda n: R.get(n, {}).get("median")
        basis = lambda n: R.get(n, {}).get("basis_bytes")
        busy = lambda n: statistics.median(R[n]["machine_busy"]) if R.get(n, {}).get("machine_busy") else None

        def extra(n, k):
            return next((e.get(k) for e in R.get(n, {}).get("extra", []) if e and e.get(k) is not None), None)

        def busy_note(*ns):
            b = [busy(n) for n in ns if busy(n) is not None]
            return f"machine busy {max(b):.1f} cores" if b else ""

        # sha256 CPU per byte on this machine (openssl, SHA-NI when the CPU has it)
        sha = cpu("floor.openssl.archive") / basis("floor.openssl.archive") if cpu("floor.openssl.archive") and basis("floor.openssl.archive") else None
        if sha:
            for store in ("s3", "dir"):
                for comp, tool in (("gzip", "pigz1"), ("zstd", "zstd1")):
                    floor = f"floor.{tool}.{'file' if store == 'dir' else 'archive'}"
                    n = f"push.{store}.{comp}.cold"
                    up = extra(n, "bytes_uploaded")
                    if cpu(n) is None or cpu(floor) is None or not up:
                        continue
                    f = cpu(floor) + sha * (basis(n) + up)
                    t(f"cpu.push.{store}.{comp}", f"cold push {comp} → {store}: s3dock user+sys / floor ({floor} CPU + sha256 of input and output)",
                      cpu(n) / f, 1.10, "<=", note=f"{cpu(n):.1f} vs {f:.1f} CPU-s; {busy_note(n)}")
            # Like for like: -i FILE against openssl reading the file, and the cat | push form
            # against openssl reading the same pipe (a pipe costs the reader kernel copies).
            for store in ("s3", "dir"):
                for comp in ("gzip", "zstd"):
                    for n, floor, how in ((f"push.{store}.{comp}.warm.file", "floor.openssl.archive", "-i FILE"),
                                          (f"push.{store}.{comp}.warm", "floor.openssl.pipe", "cat | push")):
                        if cpu(n) is not None and cpu(floor):
                            f = cpu(floor) * basis(n) / basis(floor)
                            t(f"cpu.warm.{store}.{comp}" + (".file" if how == "-i FILE" else ""),
                              f"warm re-push ({comp}, {how}) → {store}: s3dock user+sys / {floor} (sha256 of the archive)",
                              cpu(n) / f, 1.15, "<=", primary=comp == "gzip", note=f"{cpu(n):.2f} vs {f:.2f} CPU-s")
            # --decompress to a pipe spools each plain layer (its tar header needs the size
            # first): reported, but the target is the -o FILE form, which streams it in.
            for n, floor, prim, plain_from in (
                    ("pull.s3.gzip.devnull", "floor.gunzip.blobs", True, None),
                    ("pull.s3.gzip.decompress.file", "floor.gunzip.file", True, "floor.gunzip.blobs"),
                    ("pull.s3.gzip.decompress.devnull", "floor.gunzip.blobs", False, None),
                    ("pull.s3.zstd.devnull", "floor.unzstd.blobs", True, None),
                    ("pull.s3.zstd.decompress.file", "floor.unzstd.file", True, "floor.unzstd.blobs"),
                    ("pull.s3.zstd.decompress.devnull", "floor.unzstd.blobs", False, None),
                    ("pull.dir.gzip.devnull", "floor.gunzip.blobs", False, None)):
                plain = extra(plain_from or floor, "bytes_out")
                if cpu(n) is None or cpu(floor) is None or not plain:
                    continue
                f = cpu(floor) + sha * (basis(floor) + plain)
                into = " into a synced file" if plain_from else ""
                t(f"cpu.{n}", f"verified {n}: s3dock user+sys / floor (one-thread decompress{into} + sha256 of blobs and plain layers)",
                  cpu(n) / f, 1.10, "<=", primary=prim, note=f"{cpu(n):.1f} vs {f:.1f} CPU-s")
        for comp in ("gzip", "zstd"):
            one, two = f"push.dir.{comp}.core0", f"push.dir.{comp}.cores2"
            if med(one) and med(two):
                t(f"scaling.{comp}", f"core scaling, cold push -i big.tar {comp} → dir: wall with taskset -c 0 / wall on both cores",
                  med(one) / med(two), 1.8, ">=", note=f"{med(one):.1f} s vs {med(two):.1f} s; {busy_note(one, two)}")
        # Garage: does the server-side move dominate the 6 GiB push?
        if med("scale.copy.garage") and med("scale.push.garage.gzip"):
            t("garage.copy-share", "Garage, 6 GiB push: server-side move (UploadPartCopy of the blob) / whole push",
              med("scale.copy.garage") / med("scale.push.garage.gzip"), 0.25, "<", primary=False,
              note=f"{med('scale.copy.garage'):.1f} s of {med('scale.push.garage.gzip'):.1f} s")
        # link-bound transfers
        for mbit in getattr(self.a, "link_rates", None) or [1000, 200]:
            p = f"link.{mbit}"
            rate = mbit * 1e6 / 8
            for server, to in (("", ""), ("garage.", " → Garage")):
                for what in ("none", "gzip", "zstd", "auto"):
                    n = f"{p}.{server}push.{what}"
                    up = extra(n, "bytes_uploaded")
                    if med(n) and up:
                        t(n, f"{mbit} Mbit/s{to}: s3dock push --compression {what}: uploaded bytes / wall / link rate",
                          up / med(n) / rate, 0.9, ">=", primary=what in ("none", "gzip"),
                          note=f"{up / 1e6:.0f} MB in {med(n):.1f} s" + (f", zstd levels {extra(n, 'zstd_levels')}" if extra(n, "zstd_levels") else ""))
                    n = f"{p}.garage.pull.{what}"
                    if server and med(n) and basis(n):
                        t(n, f"{mbit} Mbit/s ← Garage: s3dock pull ({what} layers, verified): blob bytes / wall / link rate",
                          basis(n) / med(n) / rate, 0.9, ">=", note=f"{basis(n) / 1e6:.0f} MB in {med(n):.1f} s")
            for n, tool in ((f"{p}.pull.gzip", "s3dock pull (verified)"), (f"{p}.awscp.down", "aws s3 cp (download)")):
                if med(n) and basis(n):
                    t(n, f"{mbit} Mbit/s: {tool}: blob bytes / wall / link rate", basis(n) / med(n) / rate, 0.9, ">=",
                      primary=n.endswith("pull.gzip"), note=f"{basis(n) / 1e6:.0f} MB in {med(n):.1f} s")
            n = f"{p}.awscp.up"
            if med(n):
                t(n, f"{mbit} Mbit/s: aws s3 cp big.tar (upload, context): bytes / wall / link rate", basis(n) / med(n) / rate, 0.9, ">=",
                  primary=False, note=f"{med(n):.1f} s")
            n = f"{p}.skopeo.pull"
            if med(n) and extra(n, "bytes_out"):
                t(n, f"{mbit} Mbit/s: skopeo pull from registry:2 (context): bytes / wall / link rate",
                  extra(n, "bytes_out") / med(n) / rate, 0.9, ">=", primary=False, note=f"{med(n):.1f} s")
            for a, b, what in ((f"{p}.push.gzip", f"{p}.skopeo.push", "push gzip: s3dock speed-up over skopeo → registry:2"),
                               (f"{p}.push.none", f"{p}.awscp.up", "plain upload: s3dock push --compression none speed-up over aws s3 cp"),
                               (f"{p}.push.gzip", f"{p}.awscp.up", "s3dock push gzip speed-up over aws s3 cp of the plain archive"),
                               (f"{p}.pull.gzip", f"{p}.awscp.down", "pull: s3dock (verified) speed-up over aws s3 cp of the same blobs"),
                               (f"{p}.pull.gzip", f"{p}.skopeo.pull", "pull: s3dock speed-up over skopeo from registry:2 (dir:, compressed)"),
                               (f"{p}.push.auto", f"{p}.push.zstd", "--compression auto speed-up over zstd -3"),
                               (f"{p}.garage.push.auto", f"{p}.garage.push.zstd", "→ Garage: --compression auto speed-up over zstd -3"),
                               (f"{p}.push.auto", f"{p}.push.gzip", "--compression auto speed-up over gzip -1")):
                if med(a) and med(b):
                    t(f"{a}-vs-{b.rsplit('.', 2)[-2]}.{b.rsplit('.', 1)[-1]}", f"{mbit} Mbit/s: {what} (context)", med(b) / med(a), 1.0, ">=",
                      primary=False, note=f"{med(a):.1f} s vs {med(b):.1f} s")
            for n in (f"{p}.many.push", f"{p}.many.pull"):
                moved = extra(n, "bytes_uploaded") if n.endswith("push") else basis(n)
                if med(n) and moved:
                    need = moved / rate
                    t(n, f"{mbit} Mbit/s: many small layers, {n.rsplit('.', 1)[-1]}: wall / time its bytes need on the link",
                      med(n) / need, 1.5, "<=", note=f"{moved / 1e6:.1f} MB: {med(n):.2f} s vs {need:.2f} s")
        return out

    def table_rows(self):
        rows = []
        for c in self.cases:
            r = c.rec
            if not r["runs"]:
                rows.append([c.name, c.desc, "FAILED" if r.get("error") else "skipped"] + [""] * 7)
                continue
            ex = next((e for e in r["extra"] if e), None)
            note = "FAILED in a later round; " if r.get("error") else ""
            if ex and "bytes_uploaded" in ex:
                note += f"uploaded {ex['bytes_uploaded'] / 1e6:.0f} MB, {ex.get('blobs_skipped', 0)} blobs skipped"
            if ex and "bytes_out" in ex:
                note += f"output {ex['bytes_out'] / 1e6:.0f} MB"
            busy = statistics.median(r["machine_busy"]) if r["machine_busy"] else None
            rows.append([
                c.name, c.desc, f"{r['median']:.2f}", f"{r['min']:.2f}–{r['max']:.2f}",
                f"{r['mb_s']:.0f}" if r.get("mb_s") else "", r["basis"],
                f"{r['peak_rss'] / MiB:.0f}" if r.get("peak_rss") else "",
                f"{r['cpu_median']:.1f}" if r.get("cpu_median") is not None else "",
                f"{busy:.1f}" if busy is not None else "", note,
            ])
        return rows

    @staticmethod
    def fmt(v):
        return "n/a" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    def print_table(self):
        hdr = ["case", "median s", "min–max", "MB/s", "basis", "RSS MiB", "cpu s", "busy", "note"]
        rows = [[r[0]] + r[2:] for r in self.table_rows()]
        w = [max(len(str(x)) for x in col) for col in zip(hdr, *rows)]
        print()
        print("  ".join(h.ljust(w[i]) for i, h in enumerate(hdr)))
        for r in rows:
            print("  ".join(str(x).ljust(w[i]) for i, x in enumerate(r)))
        print()
        for t in self._targets:
            mark = {True: "MET   ", False: "MISSED", None: "n/a   "}[t["met"]]
            if t["met"] and t.get("paired_median") is not None and t["paired_median"] < t["goal"]:
                mark = "MET(~)"
            paired = f" (per-round median {self.fmt(t['paired_median'])})" if t.get("paired_median") is not None else ""
            print(f"{mark} {t['id']:<42} {self.fmt(t['value']):>7} goal {t['cmp']} {t['goal']}{paired}"
                  f"{'' if t['primary'] else ' [secondary]'}  {t['target']}")

    def write_md(self):
        m = self._machine
        L = ["# s3dock benchmark: latest run\n"]
        L.append(f"Machine: {m['nproc']} CPUs ({m['cpu_model']}, SHA-NI {'yes' if m['cpu_sha_ni'] else 'no'}), "
                 f"{m['memory']} RAM, kernel {m['kernel']}{', ' + m['hypervisor'] + ' guest' if m['hypervisor'] else ''}; "
                 f"load average at start {' '.join(m['loadavg_at_start'])}. Date {m['date']}, s3dock {m['s3dock_commit']}. "
                 f"{self.a.runs} rounds (every case once per round; link and scale cases once); inputs in the page cache; S3 = s3s-fs 0.14.1 on 127.0.0.1 "
                 "(the server shares the 2 CPUs), `garage` cases Garage 2.5.0 (single node, sqlite), `link` cases s3s-fs and "
                 "registry:2 in a network namespace behind a tbf-limited veth pair; s3dock defaults (-j 4, 16 MiB parts, "
                 "gzip level 1, zstd level 3)." + (f" {m['merged']}" if m.get("merged") else "") + "\n")

        def layers_mb(v):
            if len(v["layers"]) > 4:
                return f"{len(v['layers'])} layers, " + "%.1f" % (sum((l["size"] if isinstance(l, dict) else l) for l in v["layers"]) / 1e6)
            return " + ".join("%.0f" % ((l["size"] if isinstance(l, dict) else l) / 1e6) for l in v["layers"])
        L.append("Inputs (docker save, Docker 25 form, generated by geninputs.py): "
                 + ", ".join(f"`{k}` {v['size'] / 1e9:.2f} GB ({layers_mb(v)} MB layers)" for k, v in self.inputs.items())
                 + ". `big2` shares the 1195 MB file layer with `big`; its 268 MB random layer is new. `many`: "
                 "60 layers of 100 KiB-2 MiB.\n")
        L.append("MB/s = basis bytes / median wall seconds (1 MB = 10^6 B). RSS and cpu (user+sys s) are those of the "
                 "measured process (s3dock, or the baseline's main tool). busy = cores busy on the whole machine during "
                 "the run (all processes, including the S3 server and anything else running).\n")
        L.append("| case | what | median s | min–max s | MB/s | basis | peak RSS MiB | cpu s | busy | note |")
        L.append("|---|---|---:|---:|---:|---|---:|---:|---:|---|")
        for r in self.table_rows():
            L.append("| " + " | ".join(str(x).replace("|", "\\|") for x in r) + " |")
        L.append("\n## Targets (issues 4 and 16)\n")
        L.append("value = ratio of median throughputs (issue 4), or as the target says (issue 16: `cpu.*` = s3dock's "
                 "user+sys CPU-s over the floor: the one-thread compressor/decompressor CPU-s on the same bytes "
                 "(`floor.*` cases) plus openssl's sha256 CPU-s per byte times the bytes s3dock must hash; "
                 "`scaling.*` = wall with `taskset -c 0` over wall on all cores; `link.*` = bytes over wall over the "
                 "tbf rate of the veth link, or wall over the time the bytes need at that rate). per-round = median "
                 "of the ratios within each round. Wall-clock targets depend on the machine's load: see `busy` in "
                 "the table and the notes.\n")
        L.append("| | target | value | per-round | goal |")
        L.append("|---|---|---:|---:|---|")
        for t in self._targets:
            mark = {True: "met", False: "**missed**", None: "n/a"}[t["met"]]
            if t["met"] and t.get("paired_median") is not None and t["paired_median"] < t["goal"]:
                mark = "met (borderline: per-round median below goal)"
            text = (t["target"] + (" — " + t["note"] if t["note"] else "")).replace("|", "\\|")
            L.append(f"| {mark}{'' if t['primary'] else ' (secondary)'} | {text} "
                     f"| {self.fmt(t['value'])} | {self.fmt(t.get('paired_median'))} | {t['cmp']} {t['goal']} |")
        L.append("\nTools: " + "; ".join(f"{k}: {v.splitlines()[0] if v else '?'}" for k, v in m["tools"].items()) + "\n")
        with open(os.path.join(self.a.results, "latest.md"), "w") as f:
            f.write("\n".join(L))


def render(a):
    """Rebuilds targets, latest.md and the printed table from a saved results JSON."""
    from types import SimpleNamespace
    doc = json.load(open(a.render))
    b = Bench.__new__(Bench)
    a.runs = doc["config"]["runs"]
    a.link_rates = doc["config"].get("link_rates", [1000, 200])
    b.a, b._machine, b.nproc = a, doc["machine"], doc["machine"]["nproc"]
    b.inputs = doc["config"]["inputs"]
    b.cases = [SimpleNamespace(name=r["name"], desc=r["desc"], rec=r) for r in doc["cases"]]
    b._targets = b.targets()
    doc["targets"] = b._targets
    os.makedirs(a.results, exist_ok=True)
    with open(os.path.join(a.results, "latest.json"), "w") as f:
        json.dump(doc, f, indent=1)
    b.write_md()
    b.print_table()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work")
    ap.add_argument("--s3dock")
    ap.add_argument("--s3dock-source", default="", help="what the binary was built from (for the report)")
    ap.add_argument("--runs", type=int, default=3, help="rounds (every case runs once per round)")
    ap.add_argument("--scale", action="store_true", help="add the 6 GiB-layer image (one round)")
    ap.add_argument("--settle", type=float, default=4.0,
                    help="seconds to wait before each case that writes new files (see run_case)")
    ap.add_argument("--only", help="regex: run only the cases whose name matches (mind their dependencies)")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--no-link", action="store_true", help="skip the rate-limited link cases (they need root)")
    ap.add_argument("--link-rates", type=lambda v: [int(x) for x in v.split(",")], default=[1000, 200],
                    help="link rates in Mbit/s (comma-separated)")
    ap.add_argument("--link-zstd-levels", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                    help="fixed zstd levels to push on each link besides 3 (comma-separated), to compare with auto")
    ap.add_argument("--link-runs", type=int, default=1, help="rounds of the link cases")
    ap.add_argument("--keep-stores", action="store_true")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds before one command is given up")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--render", metavar="JSON", help="only re-render the table, targets and .md from a results JSON")
    a = ap.parse_args()
    if a.render:
        render(a)
        return
    b = Bench(a)
    try:
        b.define()
        if a.scale:
            b.define_scale()
            b.define_scale_garage()
        if not a.no_link:
            b.define_link()
        b.run()
    finally:
        b.cleanup()
        b.finish_records()
        b._targets = b.targets()
        b.save()
        b.write_md()
        b.print_table()


if __name__ == "__main__":
    main()
