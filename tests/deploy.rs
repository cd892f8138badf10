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
            // and every `docker stop` would wait out its grace period).
            ctx.build(
                &images,
                &tag,
                &format!(
                    "FROM scratch\nCOPY rootfs/ /\nCOPY www/ /www/\nEXPOSE {CONTAINER_PORT}\n\
                     CMD [\"/bin/busybox\", \"sh\", \"-c\", \"trap 'exit 0' TERM; /bin/busybox httpd -f -p {CONTAINER_PORT} -h /www & wait\"]\n"
                ),
            );
            docker_save_push(&store, &[&tag], &[&tag]);
            // Gone from the engine: deploy must load it from the store.
            docker_rmi(&tag);
        }
        let nginx = Proxy::start(&app);
        World {
            app,
            store,
            nginx,
            state: tempfile::tempdir().unwrap(),
            images,
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
        a.extend(self.nginx.args());
        a
    }

    /// `s3dock CMD APP ENV host-args...` as a command, not run.
    fn cmd(&self, cmd: &str) -> Command {
        let mut c = self.store.cmd();
        c.args([cmd, &self.app, ENV]).args(self.host_args());
        c.stdin(Stdio::null());
        c
    }

    fn deploy(&self) -> std::process::Output {
        let mut c = self.cmd("deploy");
        c.arg("--blue-green");
        c.output().unwrap()
    }

    fn deploy_ok(&self) -> String {
        let out = self.deploy();
        assert!(out.status.success(), "deploy failed: {}", stderr(&out));
        stderr(&out)
    }

    fn status(&self) -> serde_json::Value {
        let out = self.store.ok(
            &[
                "status",
                &self.app,
                ENV,
                "--json",
                "--state-dir",
                &self.state.path().display().to_string(),
            ],
            None,
        );
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

    /// The public port serves `v` within 5 s: `nginx -s reload` only signals the
    /// master, whose new workers take the new upstream a moment after deploy returns.
    fn serves(&self, v: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.nginx.get();
            if got.as_deref() == Ok(v) || Instant::now() > deadline {
                assert_eq!(got.as_deref(), Ok(v), "public port");
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
        "failed requests during the switch: {failures:?}"
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

    // Rollback: the pointer goes back to v1 and the kept blue serves again.
    let t = Instant::now();
    let rollback = w.cmd("rollback").stderr(Stdio::piped()).spawn().unwrap();
    wait_for("v1 served after the rollback", || {
        w.nginx.get().as_deref() == Ok("v1")
    });
    let served = t.elapsed();
    let out = rollback.wait_with_output().unwrap();
    assert!(out.status.success(), "rollback failed: {}", stderr(&out));
    eprintln!(
        "rollback to the kept colour: v1 served after {:.0} ms; the command (drain and stop included) took {:.0} ms",
        served.as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64() * 1000.0
    );
    w.serves("v1");
    let cur = w.store.ok(&["current", &w.app, ENV, "--json"], None);
    let cur: serde_json::Value = serde_json::from_slice(&cur.stdout).unwrap();
    assert_eq!(cur["image_tag"], "v1", "{cur}");
    let rb = w.history("rollback");
    assert_eq!(rb.len(), 1);
    assert_eq!(rb[0]["target"]["image_tag"], "v1");
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
    let w = World::new(&["v1", "v2"]);
    w.promote("v1");
    let mut agent = w.cmd("agent");
    agent.args(["--interval", "2s"]).stderr(Stdio::piped());
    let mut child = agent.spawn().unwrap();
    let log = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(log)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    wait_for("the agent's first deploy (v1)", || {
        w.nginx.get().as_deref() == Ok("v1")
    });
    // Promoted by another process; the agent picks it up on a later poll.
    let t = Instant::now();
    w.promote("v2");
    wait_for("the agent's deploy of v2", || {
        w.nginx.get().as_deref() == Ok("v2")
    });
    eprintln!(
        "agent served v2 {:.1} s after the promotion (interval 2 s)",
        t.elapsed().as_secs_f64()
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let lines = lines.join().unwrap();
    assert_eq!(status.code(), Some(0), "agent exit: {lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("s3dock: error")),
        "{lines:?}"
    );
    w.serves("v2");
    assert_eq!(w.history("deploy").len(), 2);
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
