//! Debian's nginx as the test's own process (never the system service): a static
//! server on 127.0.0.1 for read-only http(s) stores.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Nginx {
    /// Starts nginx with `server_body` inside one `server { listen 127.0.0.1:PORT ...; }`
    /// block (`listen_extra` e.g. "ssl"); None when nginx is not installed.
    pub fn start(listen_extra: &str, server_body: &str) -> Option<Nginx> {
        Nginx::start_in(tempfile::tempdir().unwrap(), "", listen_extra, server_body)
    }

    /// Like [`Nginx::start`], in `dir` (which may already hold files the config uses),
    /// with `http_extra` at the `http` level (e.g. an `include` of an upstream file).
    pub fn start_in(
        dir: tempfile::TempDir,
        http_extra: &str,
        listen_extra: &str,
        server_body: &str,
    ) -> Option<Nginx> {
        let bin = nginx_binary()?;
        let port = free_port();
        let d = dir.path().display();
        // `user root`: the stores are the test's 0700 temp dirs.
        let conf = format!(
            "user root;\nworker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 512; }}\nhttp {{\n  access_log off;\n  types {{ }}\n  default_type application/octet-stream;\n\
             client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n\
             uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  {http_extra}\n\
             server {{\n    listen 127.0.0.1:{port} {listen_extra};\n    {server_body}\n  }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .args(["-p"])
            .arg(dir.path())
            .args(["-c"])
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let n = Nginx { child, dir, port };
        n.wait_ready();
        Some(n)
    }

    fn wait_ready(&self) {
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "nginx did not listen on {}: {}",
                self.port,
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What nginx logged (for a failure message).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.path("error.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Nginx {
    /// SIGTERM, so the master stops its workers too (SIGKILL would orphan them).
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private CA and a certificate for 127.0.0.1 signed by it, made with openssl
/// in `dir`: returns (ca.pem, cert.pem, key.pem).
pub fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=s3dock test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "cert.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "cert.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "cert.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}
