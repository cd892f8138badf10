//! `deploy`, `rollback`, `agent` and `status` on this host: real Docker Engine, real
//! nginx (Debian's nginx-light, run by the test as its own process on 127.0.0.1, never
//! the system service), images built `FROM scratch` with busybox-static whose httpd
//! serves `/health` and a page naming the version. Every container and nginx a test
//! starts is removed when it ends, also when it fails.

mod common;
mod interop_support;

use common::nginx::Nginx;
use common::*;
use interop_support::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ENV: &str = "production";
const CONTAINER_PORT: &str = "8080";

fn need_peers() -> bool {
    need_docker() && need_busybox() && require("nginx (nginx-light)", have_command("nginx"))
}

/// nginx in front of the app's colours; `deploy` rewrites its upstream file.
struct Proxy(Nginx);

impl Proxy {
    fn start(app: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let upstream = format!("{app}_{ENV}");
        // Until the first deploy the upstream is a closed port (nginx answers 502).
        let file = dir.path().join("upstream.conf");
        std::fs::write(
            &file,
            format!("upstream {upstream} {{ server 127.0.0.1:1; }}\n"),
        )
        .unwrap();
        let include = format!("include {};", file.display());
        let body = format!("location / {{ proxy_pass http://{upstream}; }}");
        Proxy(Nginx::start_in(dir, &include, "", &body).expect("nginx"))
    }

    fn port(&self) -> u16 {
        self.0.port
    }

    fn conf(&self) -> String {
        self.0.path("nginx.conf").display().to_string()
    }

    /// The switch flags for s3dock.
    fn args(&self) -> Vec<String> {
        let d = self.0.dir.path().display();
        vec![
            "--port".into(),
            self.port().to_string(),
            "--switch".into(),
            "nginx".into(),
            "--nginx-upstream".into(),
            format!("{d}/upstream.conf"),
            "--nginx-reload".into(),
            format!("nginx -c {} -p {d} -s reload", self.conf()),
        ]
    }

    /// The public port's page: Ok(body) on 200, Err(what) otherwise.
    fn get(&self) -> Result<String, String> {
        http_get(self.port(), "/")
    }
}

/// curl, not s3dock's own client: `Ok(body)` for a 200.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = s.rsplit_once('\n').unwrap_or(("", &s));
    if out.status.success() && code == "200" {
        Ok(body.trim().to_string())
    } else {
        Err(format!("curl exit {} http {code}: {body}", out.status))
    }
}

/// One GET on a new connection (no curl process to start: the rollback timing polls
/// every 10 ms): `Ok(body)` for a 200.
fn fresh_get(port: u16) -> Result<String, String> {
    KeepAlive { port, conn: None }.get()
}

fn hostname() -> String {
    let out = check(&mut Command::new("hostname"));
    stdout(&out).trim().to_string()
}

/// Waits for `cond`; the bound only keeps a broken run from hanging (no timing is asserted).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One app's world: store, images v1..v3 pushed, nginx, host state dir; removes its
/// containers and images when dropped.
struct World {
    app: String,
    store: TestStore,
    nginx: Proxy,
    state: tempfile::TempDir,
    images: DockerImages,
    /// The traffic switch flags: nginx's by default.
    switch: Vec<String>,
    /// More host flags (`--cache`, `--engine`), and the run arguments after `--`.
    extra: Vec<String>,
    run_args: Vec<String>,
    /// Environment of every s3dock command (the podman test's config files).
    env: Vec<(String, String)>,
}

impl World {
    /// `versions`: which of v1, v2, v3 to build and push (v3's /health is missing: 404).
    fn new(versions: &[&str]) -> World {
        let app = format!(
            "dpl{}{}",
            run_id(),
            &uuid::Uuid::new_v4().simple().to_string()[..4]
        );
        let store = TestStore::local();
        let images = DockerImages::new();
        for v in versions {
            let ctx = BuildContext::new();
            ctx.file("www/index.html", format!("{v}\n").as_bytes());
            if *v != "v3" {
                ctx.file("www/health", format!("ok {v}\n").as_bytes());
            }
            let tag = format!("{app}:{v}");
            // A well-behaved app exits on SIGTERM (httpd alone, as PID 1, would ignore it
            // and every `docker stop` would wait out its grace period). /greeting shows
            // the GREETING variable a `-- -e GREETING=...` run argument sets.
            ctx.build(
                &images,
                &tag,
                &format!(
                    "FROM scratch\nLABEL s3dock.test.app={app}\nCOPY rootfs/ /\nCOPY www/ /www/\nEXPOSE {CONTAINER_PORT}\n\
                     CMD [\"/bin/busybox\", \"sh\", \"-c\", \"trap 'exit 0' TERM; echo ${{GREETING:-unset}} > /www/greeting; /bin/busybox httpd -f -p {CONTAINER_PORT} -h /www & wait\"]\n"
                ),
            );
            docker_save_push(&store, &[&tag], &[&tag]);
            // Gone from the engine: deploy must load it from the store. (The label makes
            // each test's image its own: with equal IDs, one test's rmi could delete the
            // image another test's build had made but not yet tagged.)
            docker_rmi(&tag);
        }
        let nginx = Proxy::start(&app);
        World {
            app,
            store,
            switch: nginx.args(),
            nginx,
            state: tempfile::tempdir().unwrap(),
            images,
            extra: Vec::new(),
            run_args: Vec::new(),
            env: Vec::new(),
        }
    }

    fn promote(&self, v: &str) {
        self.store
            .ok(&["promote", &format!("{}:{v}", self.app), ENV], None);
    }

    fn host_args(&self) -> Vec<String> {
        let mut a = vec![
            "--state-dir".to_string(),
            self.state.path().display().to_string(),
            "--container-port".into(),
            CONTAINER_PORT.into(),
            "--health".into(),
            "/health".into(),
            "--health-timeout".into(),
            "8s".into(),
            "--drain".into(),
            "1s".into(),
        ];
        a.extend(self.switch.iter().cloned());
        a.extend(self.extra.iter().cloned());
        a
    }

    /// `s3dock CMD APP ENV host-args... [-- run-args]` as a command, not run.
    fn cmd(&self, cmd: &str) -> Command {
        self.cmd_with(cmd, &[])
    }

    /// [`World::cmd`] with more flags (before the run arguments).
    fn cmd_with(&self, cmd: &str, flags: &[&str]) -> Command {
        let mut c = self.store.cmd();
        c.args([cmd, &self.app, ENV])
            .args(self.host_args())
            .args(flags);
        if !self.run_args.is_empty() {
            c.arg("--").args(&self.run_args);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.stdin(Stdio::null());
        c
    }

    fn deploy(&self) -> std::process::Output {
        self.cmd_with("deploy", &["--blue-green"]).output().unwrap()
    }

    fn deploy_ok(&self) -> String {
        let out = self.deploy();
        assert!(out.status.success(), "deploy failed: {}", stderr(&out));
        stderr(&out)
    }

    fn status(&self) -> serde_json::Value {
        let mut c = self.store.cmd();
        c.args(["status", &self.app, ENV, "--json", "--state-dir"])
            .arg(self.state.path());
        if let Some(i) = self.extra.iter().position(|a| a == "--engine") {
            c.args(&self.extra[i..i + 2]);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        let out = c.stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "status failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn history(&self, event: &str) -> Vec<serde_json::Value> {
        let out = self
            .store
            .ok(&["history", &self.app, "--json", "--event", event], None);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Names of this app's containers, running or not.
    fn containers(&self) -> Vec<String> {
        let out = check(tool("docker").args([
            "ps",
            "-a",
            "--filter",
            &format!("label=s3dock.deploy={}:{ENV}", self.app),
            "--format",
            "{{.Names}} {{.State}}",
        ]));
        let mut v: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
        v.sort();
        v
    }

    fn serves(&self, v: &str) {
        self.serves_at("/", v);
    }

    /// The public port serves `v` at `path` within 5 s: `nginx -s reload` only signals
    /// the master, whose old worker may still take a connection with the old upstream.
    fn serves_at(&self, path: &str, v: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = http_get(self.nginx.port(), path);
            if got.as_deref() == Ok(v) || Instant::now() > deadline {
                assert_eq!(got.as_deref(), Ok(v), "public port {path}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for colour in ["blue", "green"] {
            let _ = tool("docker")
                .args(["rm", "-f", &format!("{}-{ENV}-{colour}", self.app)])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // What deploy loaded (tagged APP:vN) goes too.
        for v in ["v1", "v2", "v3"] {
            self.images.add(&format!("{}:{v}", self.app));
        }
    }
}

/// A keep-alive HTTP/1.1 client, as browsers and load balancers are. A request on a
/// reused connection that the server closed while idle gets no answer at all; it is
/// sent again on a new connection (RFC 9112 §9.3.1), anything else is a failure.
struct KeepAlive {
    port: u16,
    conn: Option<BufReader<std::net::TcpStream>>,
}

impl KeepAlive {
    fn get(&mut self) -> Result<String, String> {
        use std::io::{Read, Write};
        loop {
            let reused = self.conn.is_some();
            if self.conn.is_none() {
                let s = std::net::TcpStream::connect(("127.0.0.1", self.port))
                    .map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                self.conn = Some(BufReader::new(s));
            }
            let c = self.conn.as_mut().unwrap();
            let sent = c
                .get_mut()
                .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            let mut status = String::new();
            let read = sent
                .map_err(|e| e.to_string())
                .and_then(|()| c.read_line(&mut status).map_err(|e| e.to_string()));
            if read.as_ref().map_or(true, |n| *n == 0) {
                self.conn = None;
                if reused {
                    continue;
                }
                return Err(format!("no answer: {read:?}"));
            }
            let (mut len, mut close) = (0usize, false);
            loop {
                let mut h = String::new();
                c.read_line(&mut h).map_err(|e| e.to_string())?;
                let h = h.trim_end().to_ascii_lowercase();
                if h.is_empty() {
                    break;
                }
                if let Some(v) = h.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                close |= h == "connection: close";
            }
            let mut body = vec![0; len];
            c.read_exact(&mut body).map_err(|e| e.to_string())?;
            if close {
                self.conn = None;
            }
            let body = String::from_utf8_lossy(&body).trim().to_string();
            return if status.split(' ').nth(1) == Some("200") {
                Ok(body)
            } else {
                Err(format!("{} {body}", status.trim()))
            };
        }
    }
}

/// Requests the public port in a loop until stopped (one keep-alive client); returns
/// every answer in order.
fn client_loop(
    port: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Result<String, String>>> {
    std::thread::spawn(move || {
        let mut c = KeepAlive { port, conn: None };
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            seen.push(c.get());
        }
        seen
    })
}

#[test]
fn blue_green_deploy_zero_downtime_unhealthy_and_rollback() {
    if !need_peers() {
        return;
    }
    let w = World::new(&["v1", "v2", "v3"]);

    // v1: the first deploy takes blue.
    w.promote("v1");
    let err = w.deploy_ok();
    assert!(err.contains("blue"), "{err}");
    w.serves("v1");
    let s = w.status();
    assert_eq!(s["live"]["colour"], "blue");
    assert_eq!(s["live_running"], true);
    assert_eq!(s["last"]["result"], "deployed");

    // v2 while a client hammers the public port: no failure, v1 then v2, never back.
    w.promote("v2");
    let stop = Arc::new(AtomicBool::new(false));
    let client = client_loop(w.nginx.port(), stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    w.deploy_ok();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = client.join().unwrap();
    let failures: Vec<_> = seen.iter().filter(|r| r.is_err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the switch, first {:?}; nginx error.log: {}",
        failures.len(),
        seen.len(),
        failures[0],
        w.nginx.0.error_log()
    );
    let bodies: Vec<&str> = seen.iter().map(|r| r.as_deref().unwrap()).collect();
    let first_v2 = bodies
        .iter()
        .position(|b| *b == "v2")
        .expect("v2 never served");
    assert!(first_v2 > 0, "v1 never served before the switch");
    assert!(bodies[..first_v2].iter().all(|b| *b == "v1"), "{bodies:?}");
    assert!(
        bodies[first_v2..].iter().all(|b| *b == "v2"),
        "went back to v1: {bodies:?}"
    );
    eprintln!(
        "{} requests during the v1→v2 deploy, 0 failed",
        bodies.len()
    );
    w.serves("v2");
    // The old colour is kept, stopped, for rollback.
    assert_eq!(
        w.containers(),
        [
            format!("{}-{ENV}-blue exited", w.app),
            format!("{}-{ENV}-green running", w.app)
        ]
    );

    // The same digest again: nothing to do.
    let err = w.deploy_ok();
    assert!(err.contains("already live"), "{err}");

    // Rollback: the pointer goes back to v1 and the kept blue serves again, in under a
    // second from starting `s3dock rollback` (a fresh connection every 10 ms, so no
    // keep-alive connection to an old nginx worker hides the switch).
    let t = Instant::now();
    let rollback = w.cmd("rollback").stderr(Stdio::piped()).spawn().unwrap();
    let mut probes = 0;
    let served = loop {
        probes += 1;
        if fresh_get(w.nginx.port()).as_deref() == Ok("v1") {
            break t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "v1 not served 60 s after the rollback started"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = rollback.wait_with_output().unwrap();
    let took = t.elapsed();
    assert!(out.status.success(), "rollback failed: {}", stderr(&out));
    eprintln!(
        "rollback to the kept colour: v1 served after {:.0} ms ({probes} probes); the command (drain and stop included) took {:.0} ms",
        served.as_secs_f64() * 1000.0,
        took.as_secs_f64() * 1000.0
    );
    assert!(
        served < Duration::from_secs(1),
        "rollback to the kept colour took {served:?} to serve v1: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("blue already holds this image"),
        "{}",
        stderr(&out)
    );
    w.serves("v1");
    let cur = w.store.ok(&["current", &w.app, ENV, "--json"], None);
    let cur: serde_json::Value = serde_json::from_slice(&cur.stdout).unwrap();
    assert_eq!(cur["image_tag"], "v1", "{cur}");
    // The rollback event names this host and how long its store-side move took.
    let rb = w.history("rollback");
    assert_eq!(rb.len(), 1);
    let t = &rb[0]["target"];
    assert_eq!(t["image_tag"], "v1");
    assert_eq!(rb[0]["previous"]["image_tag"], "v2", "{}", rb[0]);
    assert_eq!(t["host"].as_str(), Some(hostname().as_str()), "{}", rb[0]);
    let secs = t["duration_secs"].as_f64().expect("rollback duration_secs");
    assert!(
        secs > 0.0 && secs <= took.as_secs_f64(),
        "rollback took {secs} s by its event, {took:?} measured"
    );
    assert!(rb[0]["previous"]["digest"].as_str().is_some());
    let text = stdout(
        &w.store
            .ok(&["history", &w.app, "--event", "rollback"], None),
    );
    assert!(
        text.contains(&format!(" on {} ({secs:.1}s)", hostname())),
        "{text}"
    );
    assert_eq!(w.status()["live"]["colour"], "blue");

    // Forward to v2 again (green is kept), then v3, which never gets healthy.
    w.promote("v2");
    w.deploy_ok();
    w.serves("v2");
    w.promote("v3");
    let out = w.deploy();
    let err = stderr(&out);
    assert!(!out.status.success(), "unhealthy deploy succeeded: {err}");
    assert!(
        err.contains("s3dock: error:") && err.contains("404"),
        "{err}"
    );
    w.serves("v2");
    assert_eq!(
        w.containers(),
        [format!("{}-{ENV}-green running", w.app)],
        "stray container"
    );
    let failed = w.history("deploy-failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let f = &failed[0];
    assert_eq!(f["target"]["image_tag"], "v3");
    assert!(f["error"].as_str().unwrap().contains("404"), "{f}");
    assert!(f["target"]["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(f["previous"]["digest"].as_str().is_some());
    let s = w.status();
    assert_eq!(s["last"]["result"], "failed");
    assert_eq!(s["live"]["colour"], "green");
    let deploys = w.history("deploy");
    assert_eq!(deploys.len(), 4, "{deploys:?}");
    assert!(deploys
        .iter()
        .all(|d| d["target"]["duration_secs"].as_f64().is_some()));
    // history shows every kind in its text form too.
    let text = stdout(&w.store.ok(&["history", &w.app], None));
    for kind in ["deploy-failed", "deploy ", "rollback"] {
        assert!(text.contains(kind), "{kind} missing from history:\n{text}");
    }
}

#[test]
fn agent_deploys_a_promotion_and_stops_on_sigterm() {
    if !need_peers() {
        return;
    }
    const INTERVAL: Duration = Duration::from_secs(2);
    let w = World::new(&["v1", "v2"]);
    w.promote("v1");
    let mut agent = w.cmd_with(
        "agent",
        &["--interval", &format!("{}s", INTERVAL.as_secs())],
    );
    agent.stderr(Stdio::piped());
    let mut child = agent.spawn().unwrap();
    let log = child.stderr.take().unwrap();
    // Each log line with the moment it was read.
    let lines: Arc<std::sync::Mutex<Vec<(Instant, String)>>> = Default::default();
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(log).lines().map_while(Result::ok) {
                lines.lock().unwrap().push((Instant::now(), l));
            }
        })
    };
    let seen = |pat: &[&str]| {
        lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| pat.iter().all(|p| l.contains(p)))
            .map(|(t, _)| *t)
    };
    let v2 = format!("{}:v2", w.app);
    wait_for("the agent's first deploy (v1)", || {
        w.nginx.get().as_deref() == Ok("v1")
    });
    wait_for("the agent's report of its v1 deploy", || {
        seen(&["agent:", " serves ", ":v1 on "]).is_some()
    });
    // Promoted by another process; the agent picks it up on a later poll. The clock
    // starts before the promote command does.
    let t = Instant::now();
    w.promote("v2");
    let promoted = t.elapsed();
    wait_for("the agent's deploy of v2", || {
        w.nginx.get().as_deref() == Ok("v2")
    });
    let served = t.elapsed();
    wait_for("the agent's report of its v2 deploy", || {
        seen(&["agent:", " serves ", &format!("{v2} on ")]).is_some()
    });
    let started = seen(&["now points at", &v2, "deploying"]).expect("deploying line") - t;
    let done = seen(&["agent:", " serves ", &format!("{v2} on ")]).unwrap() - t;
    let deploy = done.saturating_sub(started);
    eprintln!(
        "agent (interval {INTERVAL:?}): promote took {promoted:.2?}; deploy of v2 started {started:.2?} after the promote began, \
         served {served:.2?}, reported done {done:.2?} (its deploy: {deploy:.2?})"
    );
    assert!(
        started <= 2 * INTERVAL,
        "the agent started deploying {started:?} after the promotion (interval {INTERVAL:?})"
    );
    assert!(
        served <= 2 * INTERVAL + deploy,
        "v2 served {served:?} after the promotion; deploy took {deploy:?} (interval {INTERVAL:?})"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let lines: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|(_, l)| l.clone())
        .collect();
    assert_eq!(status.code(), Some(0), "agent exit: {lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("s3dock: error")),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("agent: stopped"),
        "{lines:?}"
    );
    w.serves("v2");
    assert_eq!(w.history("deploy").len(), 2);
}

/// The files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `--switch hook` (a script that records the new colour's address and points nginx
/// at it), `--cache`, `-- -e VAR=...`, an environment pointing at a version, and a
/// rollback whose previous colour is gone: the previous digest is deployed again, its
/// layers from the cache (the store no longer has them).
#[test]
fn hook_switch_cache_run_args_version_and_rollback_without_the_kept_colour() {
    if !need_peers() {
        return;
    }
    let mut w = World::new(&["v1", "v2"]);
    let dir = w.nginx.0.dir.path().to_path_buf();
    let record = dir.join("hook.log");
    let hook = dir.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "set -e\n\
             echo \"$S3DOCK_COLOUR $S3DOCK_ADDR $S3DOCK_PORT $S3DOCK_APP $S3DOCK_ENV $S3DOCK_DIGEST\" >> {record}\n\
             printf 'upstream %s {{ server %s; }}\\n' {upstream} \"$S3DOCK_ADDR\" > {dir}/upstream.conf.new\n\
             mv {dir}/upstream.conf.new {dir}/upstream.conf\n\
             nginx -c {conf} -p {dir} -s reload\n",
            record = record.display(),
            upstream = format_args!("{}_{ENV}", w.app),
            dir = dir.display(),
            conf = w.nginx.conf(),
        ),
    )
    .unwrap();
    w.switch = vec![
        "--port".into(),
        w.nginx.port().to_string(),
        "--switch".into(),
        "hook".into(),
        "--hook".into(),
        format!("sh {}", hook.display()),
    ];
    let cache = tempfile::tempdir().unwrap();
    w.extra = vec!["--cache".into(), cache.path().display().to_string()];
    w.run_args = vec!["-e".into(), "GREETING=hello-from-run-args".into()];
    let hook_lines = || -> Vec<Vec<String>> {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').map(str::to_string).collect())
            .collect()
    };

    // A version: v1 is 1.0.0, and production points at 1.0.0, not at an image tag.
    w.store
        .ok(&["tag", &format!("{}:v1", w.app), "1.0.0"], None);
    w.store
        .ok(&["promote", &format!("{}:1.0.0", w.app), ENV], None);
    let err = w.deploy_ok();
    assert!(err.contains("pulling"), "{err}");
    w.serves("v1");
    let s = w.status();
    assert_eq!(s["live"]["image_tag"], "v1", "{s}");
    let port = s["live"]["port"].as_u64().unwrap();
    let digest = s["live"]["digest"].as_str().unwrap().to_string();
    let cur = w.store.ok(&["current", &w.app, ENV, "--json"], None);
    let cur: serde_json::Value = serde_json::from_slice(&cur.stdout).unwrap();
    assert_eq!(cur["target"]["kind"], "version", "{cur}");
    assert_eq!(cur["target"]["name"], "1.0.0", "{cur}");
    // The hook got the new colour's address, and its nginx rewrite moved the traffic.
    assert_eq!(
        hook_lines(),
        [vec![
            "blue".to_string(),
            format!("127.0.0.1:{port}"),
            port.to_string(),
            w.app.clone(),
            ENV.into(),
            digest,
        ]]
    );
    // The run arguments reached the container: its page shows the variable.
    w.serves_at("/greeting", "hello-from-run-args");
    let blue = format!("{}-{ENV}-blue", w.app);
    let env = stdout(&check(tool("docker").args([
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        &blue,
    ])));
    assert!(env.contains("GREETING=hello-from-run-args"), "{env}");
    // The cache holds the layers, content-addressed.
    let cached = files_under(cache.path());
    assert!(!cached.is_empty(), "nothing cached");
    for f in &cached {
        use sha2::Digest as _;
        let hex = format!("{:x}", sha2::Sha256::digest(std::fs::read(f).unwrap()));
        assert_eq!(f.file_name().unwrap().to_str(), Some(hex.as_str()), "{f:?}");
        assert!(f.starts_with(cache.path().join("blobs/sha256")), "{f:?}");
    }

    // v2 by image tag; the hook moves traffic to green.
    w.promote("v2");
    w.deploy_ok();
    w.serves("v2");
    let green_port = w.status()["live"]["port"].as_u64().unwrap();
    let lines = hook_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1][0], "green");
    assert_eq!(lines[1][1], format!("127.0.0.1:{green_port}"));

    // The kept blue (and its image) disappear, and so do the layer blobs from the
    // store: the rollback must run v1 anew, pulled with its layers from the cache.
    check(tool("docker").args(["rm", "-f", &blue]));
    check(tool("docker").args(["rmi", &format!("{}:v1", w.app)]));
    let store_dir = w.store.dir.as_ref().unwrap().path().to_path_buf();
    let mut removed = 0;
    for f in files_under(&store_dir) {
        let under = f
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str());
        if f.ends_with("data")
            && cached
                .iter()
                .any(|c| c.file_name().and_then(|n| n.to_str()) == under)
        {
            std::fs::remove_file(&f).unwrap();
            removed += 1;
        }
    }
    assert!(removed > 0, "no layer blob found in the store");
    let out = w.cmd("rollback").output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "rollback failed: {err}");
    assert!(
        err.contains("pulling") && err.contains("started blue on 127.0.0.1:"),
        "{err}"
    );
    assert!(!err.contains("already holds"), "{err}");
    w.serves("v1");
    let s = w.status();
    assert_eq!(s["live"]["colour"], "blue", "{s}");
    assert_eq!(s["live"]["image_tag"], "v1", "{s}");
    let lines = hook_lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[2][0], "blue");
    assert_eq!(
        lines[2][1],
        format!("127.0.0.1:{}", s["live"]["port"].as_u64().unwrap())
    );
    w.serves_at("/greeting", "hello-from-run-args");
    let cur = w.store.ok(&["current", &w.app, ENV, "--json"], None);
    let cur: serde_json::Value = serde_json::from_slice(&cur.stdout).unwrap();
    assert_eq!(cur["target"]["name"], "1.0.0", "{cur}");
    let rb = w.history("rollback");
    assert_eq!(rb.len(), 1);
    assert!(
        rb[0]["target"]["duration_secs"].as_f64().is_some(),
        "{}",
        rb[0]
    );
}

/// A private podman (Debian's 4.3, rootful, CNI port publishing on 127.0.0.1): its
/// own storage (vfs) and config through CONTAINERS_STORAGE_CONF / CONTAINERS_CONF, so
/// nothing touches the host's containers; removed with everything in it when dropped.
struct PodmanHost {
    dir: tempfile::TempDir,
}

impl PodmanHost {
    fn new() -> PodmanHost {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/root\"\nrunroot = \"{d}/run\"\n"
            ),
        )
        .unwrap();
        // This machine's sandbox lacks CAP_SYS_RESOURCE: podman's default rlimits
        // (raised above the current hard limits) would make runc fail.
        std::fs::write(
            dir.path().join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [engine]\nevents_logger = \"none\"\ntmp_dir = \"{d}/tmp\"\n"
            ),
        )
        .unwrap();
        PodmanHost { dir }
    }

    fn env(&self) -> Vec<(String, String)> {
        let p = |f: &str| self.dir.path().join(f).display().to_string();
        vec![
            ("CONTAINERS_STORAGE_CONF".into(), p("storage.conf")),
            ("CONTAINERS_CONF".into(), p("containers.conf")),
        ]
    }

    fn cmd(&self) -> Command {
        let mut c = tool("podman");
        c.envs(self.env());
        c
    }

    /// `name running` or `name stopped` for the containers with the app's deploy label
    /// (podman's `{{.State}}` is Docker's `{{.Status}}` text).
    fn containers(&self, app: &str) -> Vec<String> {
        let names = |all: bool| {
            let mut c = self.cmd();
            c.arg("ps").args(all.then_some("-a")).args([
                "--filter",
                &format!("label=s3dock.deploy={app}:{ENV}"),
                "--format",
                "{{.Names}}",
            ]);
            let out = check(&mut c);
            stdout(&out).lines().map(str::to_string).collect::<Vec<_>>()
        };
        let running = names(false);
        let mut v: Vec<String> = names(true)
            .into_iter()
            .map(|n| {
                let state = if running.contains(&n) {
                    "running"
                } else {
                    "stopped"
                };
                format!("{n} {state}")
            })
            .collect();
        v.sort();
        v
    }
}

impl Drop for PodmanHost {
    fn drop(&mut self) {
        for args in [&["rm", "-a", "-f"][..], &["rmi", "-a", "-f"]] {
            let _ = self
                .cmd()
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `--engine podman`: the same deploy, switch and rollback with podman's CLI.
#[test]
fn podman_engine_deploys_switches_and_rolls_back() {
    if !need_peers() || !need_podman() {
        return;
    }
    let mut w = World::new(&["v1", "v2"]);
    let podman = PodmanHost::new();
    w.extra = vec!["--engine".into(), "podman".into()];
    w.env = podman.env();
    w.run_args = vec!["-e".into(), "GREETING=from-podman".into()];
    w.promote("v1");
    let err = w.deploy_ok();
    assert!(err.contains("pulling"), "{err}");
    w.serves("v1");
    w.serves_at("/greeting", "from-podman");
    w.promote("v2");
    w.deploy_ok();
    w.serves("v2");
    let (blue, green) = (
        format!("{}-{ENV}-blue", w.app),
        format!("{}-{ENV}-green", w.app),
    );
    let names = podman.containers(&w.app);
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(
        names,
        [format!("{blue} stopped"), format!("{green} running")]
    );
    // Docker saw none of it.
    assert!(w.containers().is_empty(), "{:?}", w.containers());
    let s = w.status();
    assert_eq!(s["live_running"], true, "{s}");
    assert_eq!(s["previous_kept"], true, "{s}");
    let out = w.cmd("rollback").output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "rollback failed: {err}");
    assert!(err.contains("blue already holds this image"), "{err}");
    w.serves("v1");
    let names = podman.containers(&w.app);
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], format!("{blue} running"), "{names:?}");
    assert_eq!(names[1], format!("{green} stopped"), "{names:?}");
}

/// Runs deploy with `S3DOCK_DEPLOY_PAUSE_AT=step`, waits until it says it paused there,
/// checks traffic is still served, and kills it with SIGKILL.
fn kill_at(w: &World, step: &str, old: &str, new: &str) {
    let mut c = w.cmd("deploy");
    c.env("S3DOCK_DEPLOY_PAUSE_AT", step).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            log.read_line(&mut line).unwrap() > 0,
            "deploy ended before pausing at {step}: {seen}"
        );
        seen.push_str(&line);
        if line.contains(&format!("paused at {step}")) {
            break;
        }
    }
    let during = w.nginx.get();
    assert!(
        during.as_deref() == Ok(old) || during.as_deref() == Ok(new),
        "at {step}: {during:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let after = w.nginx.get();
    assert!(
        after.as_deref() == Ok(old) || after.as_deref() == Ok(new),
        "after kill -9 at {step}: {after:?}"
    );
}

#[test]
fn kill_9_at_each_step_then_deploy_recovers() {
    if !need_peers() {
        return;
    }
    let w = World::new(&["v1", "v2"]);
    w.promote("v1");
    w.deploy_ok();
    w.serves("v1");
    // `pulled` first: only a deploy that loads a new image passes there.
    let steps = [
        "pulled",
        "started",
        "healthy",
        "switching",
        "switched",
        "drain",
    ];
    let mut live = "v1";
    for step in steps {
        let target = if live == "v1" { "v2" } else { "v1" };
        w.promote(target);
        kill_at(&w, step, live, target);
        let err = w.deploy_ok();
        w.serves(target);
        eprintln!(
            "killed at {step}, redeployed: {}",
            err.trim().replace('\n', " | ")
        );
        let s = w.status();
        assert!(s["switching"].is_null(), "{s}");
        let names = w.containers();
        assert!(names.len() <= 2, "{names:?}");
        assert_eq!(
            names.iter().filter(|n| n.ends_with(" running")).count(),
            1,
            "{names:?}"
        );
        live = target;
    }
}
