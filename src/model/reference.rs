//! Image references as users type them (`myapp:v1.0`, `ghcr.io/acme/web@sha256:…`,
//! `localhost:5000/team/api:1`) and the repository names the store keeps them under.
//!
//! The store's repository for a reference is docker's familiar name (what `docker images`
//! shows), which is also a valid distribution repository name, so registry:2 serves it:
//!
//! | reference | repository in the store |
//! |---|---|
//! | `busybox`, `library/busybox`, `docker.io/library/busybox` | `busybox` |
//! | `acme/web`, `docker.io/acme/web` | `acme/web` |
//! | `ghcr.io/acme/web` | `ghcr.io/acme/web` |
//! | `localhost/app` | `localhost/app` |
//! | `localhost:5000/team/api` | `localhost__5000/team/api` |
//! | `registry.example.com:8443/a/b/c` | `registry.example.com__8443/a/b/c` |
//! | `docker.io/team.x/app` (a Docker Hub path that looks like a host) | `docker.io/team.x/app` |
//!
//! `:` cannot appear in a repository path, `__` can, and a hostname never contains `_`:
//! a first component `HOST__PORT` is always a host with a port, so the mapping reverses
//! ([`familiar`]), and a repository parses back to itself (`localhost__5000/team/api` is
//! read as `localhost:5000/team/api`; Docker Hub namespaces cannot contain `_`). Docker Hub images keep no host (`docker pull REGISTRY/busybox` asks
//! registry:2 for `busybox`, not `library/busybox`); one whose first path component would
//! read as a host keeps `docker.io/`. Hosts with upper-case letters, legal in docker
//! references, are refused: repository names are lower-case.

use crate::model::digest::Digest;
use std::fmt;

/// A repository name plus a tag and/or digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Repository in the store (see the module docs), e.g. `ghcr.io/acme/web` or
    /// `localhost__5000/team/api`; [`familiar`] gives it back as docker names it.
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference {0:?}: {1}")]
    Invalid(String, &'static str),
}

fn invalid(s: &str, why: &'static str) -> ReferenceError {
    ReferenceError::Invalid(s.to_string(), why)
}

/// Repository path components: lowercase alphanumerics joined by `.`, `_`, `__` or `-` runs.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_lowercase() || b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

pub fn validate_name(name: &str) -> Result<(), ReferenceError> {
    if name.is_empty() || name.len() > 255 {
        return Err(invalid(name, "repository name must be 1 to 255 characters"));
    }
    if !name.split('/').all(valid_component) {
        return Err(invalid(
            name,
            "repository name components must be lowercase letters and digits separated by '.', '_', '__' or '-'",
        ));
    }
    Ok(())
}

/// Whether the first component of a reference names a registry host, as docker decides
/// (`splitDockerDomain`): it has a `.` or `:`, is `localhost`, or has upper-case letters.
/// `host__port` is one too, so that a store repository parses back to itself.
fn is_host(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
        || port_form(first).is_some()
}

/// `host__port` → (`host`, `port`): how a host with a port is written in a repository path.
fn port_form(component: &str) -> Option<(&str, &str)> {
    let (host, port) = component.rsplit_once("__")?;
    (!host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .then_some((host, port))
}

/// Whether a repository's first component names a host (see the module docs).
fn is_stored_host(first: &str) -> bool {
    first.contains('.') || first == "localhost" || port_form(first).is_some()
}

/// A registry host as a repository path component: `localhost:5000` → `localhost__5000`.
fn host_component(s: &str, host: &str) -> Result<String, ReferenceError> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            s,
            "the registry host has upper-case letters, which a repository name cannot hold: tag the image with the host in lower case",
        ));
    }
    let (name, port) = match port_form(host) {
        Some((n, p)) => (n, Some(p)),
        None => match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        },
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !name.split('.').all(label_ok) {
        return Err(invalid(
            s,
            "the registry host must be a DNS name (letters, digits, '-' and '.') with an optional :port (IP v6 addresses are not supported)",
        ));
    }
    match port {
        None => Ok(name.to_string()),
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(format!("{name}__{p}"))
        }
        Some(_) => Err(invalid(s, "the registry port must be a number")),
    }
}

/// A store repository as docker names it: `localhost__5000/team/api` → `localhost:5000/team/api`.
pub fn familiar(repo: &str) -> String {
    match repo.split_once('/') {
        Some((first, rest)) => match port_form(first) {
            Some((host, port)) => format!("{host}:{port}/{rest}"),
            None => repo.to_string(),
        },
        None => repo.to_string(),
    }
}

impl Reference {
    /// Parses `[host[:port]/]path[:tag][@sha256:hex]` as docker does and names the store
    /// repository it maps to (see the module docs).
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| invalid(s, "the digest must be sha256:<64 hex>"))?,
                ),
            ),
            None => (s, None),
        };
        // A ':' after the last '/' separates the tag (a ':' before it belongs to a host:port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(invalid(
                    s,
                    "tags are up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
                ));
            }
        }
        let (host, path) = match name.split_once('/') {
            Some((first, path)) if is_host(first) => (Some(first), path),
            _ => (None, name),
        };
        if path.is_empty() {
            return Err(invalid(s, "missing repository name"));
        }
        let name = match host {
            None | Some("docker.io") | Some("index.docker.io") => {
                // Docker Hub: `library/` is implied for one-component names.
                let path = path
                    .strip_prefix("library/")
                    .filter(|p| !p.contains('/'))
                    .unwrap_or(path);
                match path.split_once('/') {
                    Some((first, _)) if is_stored_host(first) => format!("docker.io/{path}"),
                    _ => path.to_string(),
                }
            }
            Some(h) => format!("{}/{path}", host_component(s, h)?),
        };
        validate_name(&name).map_err(|_| {
            invalid(
                s,
                "repository name components must be lowercase letters and digits separated by '.', '_', '__' or '-'",
            )
        })?;
        Ok(Reference { name, tag, digest })
    }

    /// The tag, `latest` when neither tag nor digest was given (as docker does).
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// `name` is a store repository.
    pub fn with_tag(name: &str, tag: &str) -> Self {
        Reference {
            name: name.to_string(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }
}

/// Docker's familiar form, which [`Reference::parse`] reads back to the same reference.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&familiar(&self.name))?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let r = Reference::parse("myapp:v1.0").unwrap();
        assert_eq!((r.name.as_str(), r.tag.as_deref()), ("myapp", Some("v1.0")));
        let r = Reference::parse("docker.io/library/busybox").unwrap();
        assert_eq!(
            (r.name.as_str(), r.tag_or_latest()),
            ("busybox", Some("latest"))
        );
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("app@{d}")).unwrap();
        assert_eq!(r.digest.unwrap().to_string(), d);
        assert_eq!(r.tag_or_latest(), None);
        // `host:port` alone is a name and a tag, as docker reads it.
        let r = Reference::parse("localhost:5000").unwrap();
        assert_eq!(
            (r.name.as_str(), r.tag.as_deref()),
            ("localhost", Some("5000"))
        );
    }

    #[test]
    fn repositories_keep_the_registry_host() {
        for (typed, repo, shown) in [
            ("busybox", "busybox", "busybox"),
            ("library/busybox", "busybox", "busybox"),
            ("docker.io/library/busybox", "busybox", "busybox"),
            ("index.docker.io/library/busybox", "busybox", "busybox"),
            ("docker.io/library/a/b", "library/a/b", "library/a/b"),
            ("acme/web", "acme/web", "acme/web"),
            ("docker.io/acme/web", "acme/web", "acme/web"),
            ("ghcr.io/acme/web", "ghcr.io/acme/web", "ghcr.io/acme/web"),
            ("localhost/app", "localhost/app", "localhost/app"),
            (
                "localhost:5000/team/api",
                "localhost__5000/team/api",
                "localhost:5000/team/api",
            ),
            (
                "registry.example.com:8443/a/b/c",
                "registry.example.com__8443/a/b/c",
                "registry.example.com:8443/a/b/c",
            ),
            ("127.0.0.1:5000/x", "127.0.0.1__5000/x", "127.0.0.1:5000/x"),
            ("team.x/app", "team.x/app", "team.x/app"),
            // Docker Hub paths whose first component would read as a host keep `docker.io/`.
            (
                "docker.io/team.x/app",
                "docker.io/team.x/app",
                "docker.io/team.x/app",
            ),
            (
                "docker.io/localhost/app",
                "docker.io/localhost/app",
                "docker.io/localhost/app",
            ),
            (
                "localhost__5000/team/api",
                "localhost__5000/team/api",
                "localhost:5000/team/api",
            ),
            ("foo__5000/x", "foo__5000/x", "foo:5000/x"),
            (
                "docker.io/foo__5000/x",
                "docker.io/foo__5000/x",
                "docker.io/foo__5000/x",
            ),
            ("foo__bar/x", "foo__bar/x", "foo__bar/x"),
            (
                "docker.io/docker.io/library/x",
                "docker.io/docker.io/library/x",
                "docker.io/docker.io/library/x",
            ),
        ] {
            let r = Reference::parse(&format!("{typed}:1")).unwrap();
            assert_eq!(r.name, repo, "{typed}");
            assert_eq!(familiar(repo), shown, "{typed}");
            assert_eq!(r.to_string(), format!("{shown}:1"), "{typed}");
            // The familiar form and the repository read back to the same repository.
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r, "{typed}");
            assert_eq!(Reference::parse(repo).unwrap().name, repo, "{typed}");
        }
    }

    #[test]
    fn printed_references_parse_back() {
        // Found by the `documents` fuzz target: `team.x/app` printed as is was read
        // back as repository `app` on host `team.x`.
        for s in [
            "docker.io/s3docker.io/s3docky:1",
            "localhost:5000/team.x/app:1",
            "reg.example.com/localhost/app",
            "docker.io/docker.io/library/x:2",
            "team/app:1",
            "a.b",
            "docker.io/library/busybox",
            "localhost__5000/team/api",
            "x__1/y__2/z",
        ] {
            let r = Reference::parse(s).unwrap();
            let printed = r.to_string();
            assert_eq!(
                Reference::parse(&printed).unwrap(),
                r,
                "{s:?} printed as {printed:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_references() {
        for s in [
            "",
            "App:1",
            "app:",
            "app:-x",
            "a//b",
            "app@sha256:xyz",
            "../x",
            "app:1:2",
            "ghcr.io/",
            "localhost:5000/",
            "host:port/app",
            "a..b/c",
            "-a.b/c",
            "a_b.c/d",
            "[::1]:5000/app",
            "localhost:5000/App",
        ] {
            assert!(Reference::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn refuses_upper_case_hosts_clearly() {
        for s in ["GHCR.io/acme/web:1", "Registry/app", "localHost:5000/a"] {
            let e = Reference::parse(s).unwrap_err().to_string();
            assert!(e.contains("upper-case"), "{s}: {e}");
        }
    }
}
