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
