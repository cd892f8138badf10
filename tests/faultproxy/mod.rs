//! A fault-injecting HTTP/1.1 proxy for tests: s3dock talks to it as its S3 endpoint
//! and it forwards to the real server, except when told to misbehave — answer
//! `503 SlowDown`, reset the connection in the middle of a request or response body,
//! or answer slowly. Keep-alive on both sides; bodies framed by Content-Length or
//! chunked. The Host header is passed through untouched, so SigV4 signatures made
//! for the proxy's address still verify at the server.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bodies at least this long count as "parts" for the body-reset faults.
pub const PART_BODY_MIN: u64 = 64 << 10;

/// What goes wrong. Counters are global across connections; 0 disables a fault.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Answer every Nth request with `503 SlowDown` (after reading its body).
    pub slowdown_every: u64,
    /// Of requests with a body of at least [`PART_BODY_MIN`], reset the connection of
    /// every Nth after reading half of its body.
    pub reset_request_every: u64,
    /// Of responses with a body of at least [`PART_BODY_MIN`], send half of every Nth
    /// and then reset the connection.
    pub reset_response_every: u64,
    /// Wait this long before sending each response.
    pub delay: Duration,
    /// Answer every request after the first N with `503 SlowDown` (None: never).
    pub fail_after: Option<u64>,
}

/// What the proxy saw and did.
#[derive(Default, Debug)]
pub struct ProxyStats {
    pub requests: AtomicU64,
    pub forwarded: AtomicU64,
    pub slowdowns: AtomicU64,
    pub request_resets: AtomicU64,
    pub response_resets: AtomicU64,
    /// Request lines seen, in order (method and path without the query).
    pub log: Mutex<Vec<String>>,
    /// The `x-amz-content-sha256` header of every PUT with a body (the SigV4 payload hash).
    pub put_payload_hashes: Mutex<Vec<String>>,
}

impl ProxyStats {
    pub fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
}

struct Shared {
    upstream: String,
    faults: Mutex<Faults>,
    stats: Arc<ProxyStats>,
    body_requests: AtomicU64,
    body_responses: AtomicU64,
}

pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream` (`http://host:port`).
    pub fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("upstream must be http://host:port")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(faults),
            stats: Arc::new(ProxyStats::default()),
            body_requests: AtomicU64::new(0),
            body_responses: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(&s, conn);
                });
            }
        });
        FaultProxy {
            port,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_faults(&self, f: Faults) {
        *self.shared.faults.lock().unwrap() = f;
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    pub fn count(&self, which: fn(&ProxyStats) -> &AtomicU64) -> u64 {
        which(&self.shared.stats).load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop; connection threads end when their clients hang up.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Closes with RST instead of FIN (SO_LINGER 0), as a dropped connection looks.
fn reset(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

struct Head {
    raw: Vec<u8>,
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    /// The head re-serialized without the headers named in `drop`.
    fn without(&self, drop: &[&str]) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.first).into_bytes();
        for (k, v) in &self.headers {
            if !drop.iter().any(|d| k.eq_ignore_ascii_case(d)) {
                out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Reads a request or response head; None on a clean end of stream before it.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            if raw.len() == line.len() {
                // Stray empty line between messages.
                raw.clear();
                continue;
            }
            break;
        }
        if raw.len() > 64 << 10 {
            return Err(io::Error::other("head too long"));
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Some(Head {
        raw,
        first,
        headers,
    }))
}

fn copy_exact(r: &mut impl Read, w: &mut impl Write, mut n: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    while n > 0 {
        let m = n.min(buf.len() as u64) as usize;
        r.read_exact(&mut buf[..m])?;
        w.write_all(&buf[..m])?;
        n -= m as u64;
    }
    Ok(())
}

/// Copies a chunked body with its framing, trailers included; returns the data length.
fn copy_chunked(r: &mut impl BufRead, w: &mut impl Write) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        w.write_all(&line)?;
        let text = String::from_utf8_lossy(&line);
        let hex = text.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(hex, 16)
            .map_err(|_| io::Error::other(format!("bad chunk size line {text:?}")))?;
        if size == 0 {
            loop {
                let mut t = Vec::new();
                if r.read_until(b'\n', &mut t)? == 0 {
                    return Ok(total);
                }
                w.write_all(&t)?;
                if t == b"\r\n" || t == b"\n" {
                    return Ok(total);
                }
            }
        }
        copy_exact(r, w, size + 2)?;
        total += size;
    }
}

fn slowdown(w: &mut impl Write, head_request: bool) -> io::Result<()> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                <Message>Please reduce your request rate.</Message>\
                <RequestId>faultproxy</RequestId></Error>";
    let len = if head_request { 0 } else { body.len() };
    write!(
        w,
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {len}\r\n\
         x-amz-request-id: faultproxy\r\n\r\n"
    )?;
    if !head_request {
        w.write_all(body.as_bytes())?;
    }
    w.flush()
}

/// Serves one client connection until it closes (or a fault resets it).
fn serve(s: &Shared, client: TcpStream) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut cw = client.try_clone()?;
    let mut cr = BufReader::with_capacity(64 << 10, client.try_clone()?);
    let mut upstream: Option<(BufReader<TcpStream>, TcpStream)> = None;
    loop {
        let Some(req) = read_head(&mut cr)? else {
            return Ok(());
        };
        let stats = &s.stats;
        let n = stats.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let faults = s.faults.lock().unwrap().clone();
        let method = req.first.split(' ').next().unwrap_or("").to_string();
        stats.log.lock().unwrap().push(
            req.first
                .rsplit_once(' ')
                .map_or(req.first.as_str(), |(a, _)| a)
                .split('?')
                .next()
                .unwrap_or("")
                .to_string(),
        );
        if method == "PUT" && req.header("content-length").is_some_and(|l| l != "0") {
            stats.put_payload_hashes.lock().unwrap().push(
                req.header("x-amz-content-sha256")
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        if req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            cw.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        // The request body, raw (with its chunked framing, if any).
        let len = req.content_length();
        let big_body = req.chunked() || len.unwrap_or(0) >= PART_BODY_MIN;
        if big_body && faults.reset_request_every > 0 {
            let k = s.body_requests.fetch_add(1, Ordering::SeqCst) + 1;
            if k.is_multiple_of(faults.reset_request_every) {
                // Read about half of the body, then drop the connection hard.
                let half = len.unwrap_or(PART_BODY_MIN) / 2;
                let _ = copy_exact(&mut cr, &mut io::sink(), half);
                stats.request_resets.fetch_add(1, Ordering::SeqCst);
                reset(&client);
                return Ok(());
            }
        }
        let mut body = Vec::new();
        if req.chunked() {
            copy_chunked(&mut cr, &mut body)?;
        } else if let Some(l) = len {
            copy_exact(&mut cr, &mut body, l)?;
        }
        let failing = faults.fail_after.is_some_and(|k| n > k)
            || (faults.slowdown_every > 0 && n.is_multiple_of(faults.slowdown_every));
        if failing {
            stats.slowdowns.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(faults.delay);
            slowdown(&mut cw, method == "HEAD")?;
            continue;
        }
        // Forward, reconnecting once if a kept-alive upstream connection went away.
        let fwd_head = req.without(&["expect"]);
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            if upstream.is_none() {
                let u = TcpStream::connect(&s.upstream)?;
                u.set_read_timeout(Some(Duration::from_secs(120)))?;
                upstream = Some((BufReader::with_capacity(64 << 10, u.try_clone()?), u));
            }
            let (ur, uw) = upstream.as_mut().unwrap();
            let sent = uw.write_all(&fwd_head).and_then(|_| uw.write_all(&body));
            let got = sent.and_then(|_| loop {
                // Skip interim 1xx answers.
                match read_head(ur)? {
                    None => break Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                    Some(h)
                        if h.first
                            .split(' ')
                            .nth(1)
                            .is_some_and(|c| c.starts_with('1')) =>
                    {
                        continue
                    }
                    Some(h) => break Ok(h),
                }
            });
            match got {
                Ok(h) => break h,
                Err(e) => {
                    upstream = None;
                    if attempt >= 2 {
                        return Err(e);
                    }
                }
            }
        };
        stats.forwarded.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(faults.delay);
        let status: u16 = resp
            .first
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (ur, _) = upstream.as_mut().unwrap();
        let no_body = method == "HEAD" || status == 204 || status == 304;
        let rlen = resp.content_length();
        if !no_body
            && !resp.chunked()
            && rlen.unwrap_or(0) >= PART_BODY_MIN
            && faults.reset_response_every > 0
        {
            let k = s.body_responses.fetch_add(1, Ordering::SeqCst) + 1;
            if k.is_multiple_of(faults.reset_response_every) {
                cw.write_all(&resp.raw)?;
                copy_exact(ur, &mut cw, rlen.unwrap() / 2)?;
                cw.flush()?;
                stats.response_resets.fetch_add(1, Ordering::SeqCst);
                reset(&client);
                return Ok(());
            }
        }
        cw.write_all(&resp.raw)?;
        if no_body {
        } else if resp.chunked() {
            copy_chunked(ur, &mut cw)?;
        } else if let Some(l) = rlen {
            copy_exact(ur, &mut cw, l)?;
        } else {
            // Delimited by the end of the connection.
            io::copy(ur, &mut cw)?;
            cw.flush()?;
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        cw.flush()?;
        if resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            upstream = None;
        }
    }
}
