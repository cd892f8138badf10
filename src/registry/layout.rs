//! The one place that knows object keys: the registry v2 storage layout
//! (`docker/registry/v2/...`, as distribution's `paths.go`) and s3dock's own
//! records beside it under `s3dock/`, which a registry never reads or collects.

use crate::model::digest::Digest;

#[derive(Clone, Debug)]
pub struct Layout {
    /// Root directory inside the bucket or directory, without leading/trailing `/`.
    root: String,
}

impl Layout {
    pub fn new(root: &str) -> Self {
        Layout {
            root: root.trim_matches('/').to_string(),
        }
    }

    fn join(&self, rest: &str) -> String {
        if self.root.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.root)
        }
    }

    fn v2(&self, rest: &str) -> String {
        self.join(&format!("docker/registry/v2/{rest}"))
    }

    pub fn blob_data(&self, d: &Digest) -> String {
        let h = d.hex();
        self.v2(&format!("blobs/sha256/{}/{h}/data", &h[..2]))
    }

    pub fn blobs_prefix(&self) -> String {
        self.v2("blobs/sha256/")
    }

    /// Inverse of [`Layout::blob_data`] for keys found by listing [`Layout::blobs_prefix`].
    pub fn blob_digest_of_key(&self, key: &str) -> Option<Digest> {
        let rest = key
            .strip_prefix(&self.blobs_prefix())?
            .strip_suffix("/data")?;
        let (_, hex) = rest.split_once('/')?;
        Digest::from_hex(hex).ok()
    }

    pub fn repositories_prefix(&self) -> String {
        self.v2("repositories/")
    }

    /// `repositories/{repo}/`; a repository's own folders (`_manifests`, `_layers`,
    /// `_uploads`) start with `_`, which no repository name component can.
    pub fn repository_prefix(&self, repo: &str) -> String {
        if repo.is_empty() {
            self.repositories_prefix()
        } else {
            self.v2(&format!("repositories/{repo}/"))
        }
    }

    pub fn layer_link(&self, repo: &str, d: &Digest) -> String {
        self.v2(&format!(
            "repositories/{repo}/_layers/sha256/{}/link",
            d.hex()
        ))
    }

    pub fn revision_link(&self, repo: &str, d: &Digest) -> String {
        self.v2(&format!(
            "repositories/{repo}/_manifests/revisions/sha256/{}/link",
            d.hex()
        ))
    }

    pub fn tags_prefix(&self, repo: &str) -> String {
        self.v2(&format!("repositories/{repo}/_manifests/tags/"))
    }

    pub fn tag_current(&self, repo: &str, tag: &str) -> String {
        self.v2(&format!(
            "repositories/{repo}/_manifests/tags/{tag}/current/link"
        ))
    }

    pub fn tag_index(&self, repo: &str, tag: &str, d: &Digest) -> String {
        self.v2(&format!(
            "repositories/{repo}/_manifests/tags/{tag}/index/sha256/{}/link",
            d.hex()
        ))
    }

    /// Index entry: which stored blob holds the layer with this diff_id in this compression.
    pub fn diffid_index(&self, diff_id: &Digest, compression: &str) -> String {
        self.join(&format!(
            "s3dock/index/diffid/{}/{compression}.json",
            diff_id.hex()
        ))
    }

    /// Index entry for legacy archives, whose layer files are named by a v1 ID
    /// (a hash over the layer's chain ID) rather than by a content digest.
    pub fn v1id_index(&self, v1_id: &str) -> String {
        self.join(&format!("s3dock/index/v1id/{v1_id}.json"))
    }

    /// Temporary objects for blobs whose digest is known only once written. `group`
    /// names what is being written (same input, same settings), so an upload an
    /// interrupted push left open can be found under [`Layout::temp_group`] and continued.
    pub fn temp(&self, group: &str, id: &str) -> String {
        self.join(&format!("s3dock/tmp/{group}.{id}"))
    }

    pub fn temp_group(&self, group: &str) -> String {
        self.join(&format!("s3dock/tmp/{group}."))
    }

    pub fn temp_prefix(&self) -> String {
        self.join("s3dock/tmp/")
    }

    /// Every key of this store starts with this (empty for a store at the bucket root).
    pub fn root_prefix(&self) -> String {
        self.join("")
    }

    // --- Garbage collection (see `registry::gclock`). ---

    /// Written first by a `gc` run and removed when it is done: pushes wait while one
    /// is fresh. One per run, so one gc finishing never uncovers another's sweep.
    pub fn gc_sweep(&self, id: &str) -> String {
        self.join(&format!("s3dock/gc/sweeps/{id}"))
    }

    pub fn gc_sweeps_prefix(&self) -> String {
        self.join("s3dock/gc/sweeps/")
    }

    /// One lease per running push, written before it looks at any blob.
    pub fn gc_lease(&self, id: &str) -> String {
        self.join(&format!("s3dock/gc/leases/{id}"))
    }

    pub fn gc_leases_prefix(&self) -> String {
        self.join("s3dock/gc/leases/")
    }

    /// An object [`super::cas::probe`] writes, and deletes, to learn whether the server
    /// honours conditional writes. One per probe, so concurrent probes never meet.
    pub fn conditional_write_probe(&self, id: &str) -> String {
        self.join(&format!("s3dock/probe/{id}"))
    }

    pub fn diffid_index_prefix(&self) -> String {
        self.join("s3dock/index/diffid/")
    }

    /// What a key under [`Layout::repositories_prefix`] is.
    pub fn repo_key(&self, key: &str) -> Option<RepoKey> {
        let rest = key.strip_prefix(&self.repositories_prefix())?;
        let digest_link = |s: &str| -> Option<Digest> {
            Digest::from_hex(s.strip_prefix("sha256/")?.strip_suffix("/link")?).ok()
        };
        if let Some((repo, tail)) = rest.split_once("/_layers/") {
            return Some(RepoKey::Layer(repo.to_string(), digest_link(tail)?));
        }
        let (repo, tail) = rest.split_once("/_manifests/")?;
        let repo = repo.to_string();
        if let Some(t) = tail.strip_prefix("revisions/") {
            return Some(RepoKey::Revision(repo, digest_link(t)?));
        }
        let t = tail.strip_prefix("tags/")?;
        let (tag, link) = t.split_once('/')?;
        let tag = tag.to_string();
        if link == "current/link" {
            return Some(RepoKey::TagCurrent(repo, tag));
        }
        Some(RepoKey::TagIndex(
            repo,
            tag,
            digest_link(link.strip_prefix("index/")?)?,
        ))
    }

    /// Inverse of [`Layout::diffid_index`]: (diff_id, compression name).
    pub fn diffid_of_index_key(&self, key: &str) -> Option<(Digest, String)> {
        let rest = key.strip_prefix(&self.diffid_index_prefix())?;
        let (hex, file) = rest.split_once('/')?;
        let c = file.strip_suffix(".json")?;
        Some((Digest::from_hex(hex).ok()?, c.to_string()))
    }

    // --- Release records (issue 6): one JSON document per object, all under `s3dock/`. ---

    /// Every app's records: `s3dock/apps/{app}/...` (the app is a repository path).
    pub fn apps_prefix(&self) -> String {
        self.join("s3dock/apps/")
    }

    /// The app a key under [`Layout::apps_prefix`] belongs to (`team/app` from
    /// `s3dock/apps/team/app/_images/x.json`): everything before the first `_`-component,
    /// which repository names can never contain.
    pub fn app_of_record_key(&self, key: &str) -> Option<String> {
        let rest = key.strip_prefix(&self.apps_prefix())?;
        let i = rest.find("/_")?;
        Some(rest[..i].to_string())
    }

    /// `s3dock/apps/{app}/`: the app's records (images, versions, environments).
    pub fn app_prefix(&self, app: &str) -> String {
        self.join(&format!("s3dock/apps/{app}/"))
    }

    /// Metadata of a pushed image tag (digests, sizes, git, who pushed, archived content).
    pub fn image_record(&self, app: &str, tag: &str) -> String {
        self.join(&format!("s3dock/apps/{app}/_images/{tag}.json"))
    }

    pub fn image_records_prefix(&self, app: &str) -> String {
        self.join(&format!("s3dock/apps/{app}/_images/"))
    }

    /// A version (semver) tag: which image tag and digest it names, and its moves.
    pub fn version_record(&self, app: &str, version: &str) -> String {
        self.join(&format!("s3dock/apps/{app}/_versions/{version}.json"))
    }

    pub fn version_records_prefix(&self, app: &str) -> String {
        self.join(&format!("s3dock/apps/{app}/_versions/"))
    }

    /// An environment pointer (written with conditional writes only).
    pub fn env_record(&self, app: &str, env: &str) -> String {
        self.join(&format!("s3dock/apps/{app}/_envs/{env}.json"))
    }

    pub fn env_records_prefix(&self, app: &str) -> String {
        self.join(&format!("s3dock/apps/{app}/_envs/"))
    }

    /// `s3dock/audit/{app}/`: one folder per month below it.
    pub fn audit_prefix(&self, app: &str) -> String {
        self.join(&format!("s3dock/audit/{app}/"))
    }

    /// `s3dock/audit/{app}/{YYYYMM}/`.
    pub fn audit_month_prefix(&self, app: &str, yyyymm: &str) -> String {
        self.join(&format!("s3dock/audit/{app}/{yyyymm}/"))
    }

    /// An immutable audit event: `s3dock/audit/{app}/{YYYYMM}/{stem}.json`, where the stem
    /// is `{YYYYMMDD-HHMMSS}-{event}-{githash}` (plus `-{n}` if that second is taken).
    pub fn audit_event(&self, app: &str, stem: &str) -> String {
        self.join(&format!("s3dock/audit/{app}/{}/{stem}.json", &stem[..6]))
    }
}

/// A key of the registry's repositories folder, by what it is (the digest is the one
/// the key names; a link's content may differ, which `verify` reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoKey {
    /// `{repo}/_layers/sha256/{hex}/link`
    Layer(String, Digest),
    /// `{repo}/_manifests/revisions/sha256/{hex}/link`
    Revision(String, Digest),
    /// `{repo}/_manifests/tags/{tag}/current/link`
    TagCurrent(String, String),
    /// `{repo}/_manifests/tags/{tag}/index/sha256/{hex}/link`
    TagIndex(String, String, Digest),
}

/// A link file body: the digest string, 71 bytes, no newline (the registry rejects one).
pub fn link_body(d: &Digest) -> Vec<u8> {
    d.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_registry_layout() {
        let l = Layout::new("/registry/");
        let d = Digest::of(&[0u8; 1024]);
        let h = d.hex();
        assert_eq!(
            l.blob_data(&d),
            format!("registry/docker/registry/v2/blobs/sha256/5f/{h}/data")
        );
        assert_eq!(l.blob_digest_of_key(&l.blob_data(&d)), Some(d));
        assert_eq!(
            l.tag_current("team/app", "v1.0"),
            "registry/docker/registry/v2/repositories/team/app/_manifests/tags/v1.0/current/link"
        );
        assert_eq!(link_body(&d).len(), 71);
        for (key, what) in [
            (
                l.layer_link("team/app", &d),
                RepoKey::Layer("team/app".into(), d),
            ),
            (l.revision_link("a", &d), RepoKey::Revision("a".into(), d)),
            (
                l.tag_current("a", "v1"),
                RepoKey::TagCurrent("a".into(), "v1".into()),
            ),
            (
                l.tag_index("a", "v1", &d),
                RepoKey::TagIndex("a".into(), "v1".into(), d),
            ),
        ] {
            assert_eq!(l.repo_key(&key), Some(what));
        }
        assert_eq!(
            l.diffid_of_index_key(&l.diffid_index(&d, "zstd")),
            Some((d, "zstd".to_string()))
        );
        assert_eq!(
            l.audit_event("team/app", "20250721-211800-promote-f7a5a27"),
            "registry/s3dock/audit/team/app/202507/20250721-211800-promote-f7a5a27.json"
        );
        assert_eq!(
            l.env_record("team/app", "production"),
            "registry/s3dock/apps/team/app/_envs/production.json"
        );
        assert_eq!(
            l.app_of_record_key(&l.image_record("team/app", "v1")),
            Some("team/app".to_string())
        );
        assert_eq!(
            Layout::new("").layer_link("a", &d),
            format!("docker/registry/v2/repositories/a/_layers/sha256/{h}/link")
        );
    }
}
