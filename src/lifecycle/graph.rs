//! The mark phase: every manifest, index, config and layer reachable from the
//! repositories' revision links and tags and from the release records (versions,
//! environments), and which `_layers` links those reach. Roots are what `registry
//! garbage-collect` (without `--delete-untagged`) marks from, plus the records, so
//! after s3dock's gc the registry's own finds nothing more to delete.

use crate::model::digest::Digest;
use crate::model::image::{our_digest, parse_document, Document};
use crate::registry::layout::RepoKey;
use crate::registry::Registry;
use crate::release::access;
use crate::release::records::{EnvRecord, Kind, VersionRecord};
use crate::store::ObjectInfo;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Everything under the repositories folder, by what it is.
#[derive(Debug, Default)]
pub struct Scan {
    /// (repo, digest the key names) → the link object.
    pub layers: BTreeMap<(String, Digest), ObjectInfo>,
    pub revisions: BTreeMap<(String, Digest), ObjectInfo>,
    /// (repo, tag) → its `current/link`.
    pub tags: BTreeMap<(String, String), ObjectInfo>,
    pub tag_index: Vec<(String, String, Digest, ObjectInfo)>,
}

impl Scan {
    pub async fn read(store: &Registry) -> Result<Scan> {
        let mut s = Scan::default();
        let l = store.layout();
        for o in store.list_objects(&l.repositories_prefix()).await? {
            match l.repo_key(&o.key) {
                Some(RepoKey::Layer(r, d)) => {
                    s.layers.insert((r, d), o);
                }
                Some(RepoKey::Revision(r, d)) => {
                    s.revisions.insert((r, d), o);
                }
                Some(RepoKey::TagCurrent(r, t)) => {
                    s.tags.insert((r, t), o);
                }
                Some(RepoKey::TagIndex(r, t, d)) => s.tag_index.push((r, t, d, o)),
                None => {}
            }
        }
        Ok(s)
    }

    pub fn repos(&self) -> BTreeSet<String> {
        self.layers
            .keys()
            .chain(self.revisions.keys())
            .map(|(r, _)| r.clone())
            .chain(self.tags.keys().map(|(r, _)| r.clone()))
            .collect()
    }
}

/// What a manifest or index refers to: (digest, size) of each blob, and the children
/// of an index (which are manifests themselves).
pub struct Refs {
    pub config: Option<(Digest, u64)>,
    /// With the media type, for `verify --deep`.
    pub layers: Vec<(Digest, u64, String)>,
    pub children: Vec<(Digest, u64)>,
}

/// Parses a manifest's or index's references; the error says which document failed.
pub fn refs_of(d: &Digest, bytes: &[u8]) -> Result<Refs> {
    let doc = parse_document(bytes).with_context(|| format!("manifest {d}"))?;
    let dig = |x: &oci_spec::image::Descriptor| -> Result<(Digest, u64)> {
        Ok((
            our_digest(x.digest()).with_context(|| format!("manifest {d}"))?,
            x.size(),
        ))
    };
    Ok(match doc {
        Document::Manifest(m) => Refs {
            config: Some(dig(m.config())?),
            layers: m
                .layers()
                .iter()
                .map(|l| Ok((dig(l)?.0, l.size(), l.media_type().to_string())))
                .collect::<Result<_>>()?,
            children: Vec::new(),
        },
        Document::Index(i) => Refs {
            config: None,
            layers: Vec::new(),
            children: i.manifests().iter().map(dig).collect::<Result<_>>()?,
        },
    })
}

/// The marked set.
#[derive(Debug, Default)]
pub struct Marked {
    pub blobs: HashSet<Digest>,
    /// (repo, digest) of every `_layers` link a marked manifest needs.
    pub layer_links: HashSet<(String, Digest)>,
    manifests: HashSet<(String, Digest)>,
}

impl Marked {
    /// Marks a manifest or index of `repo` and everything it reaches. A missing manifest
    /// blob marks nothing more (verify reports it); one that cannot be read or parsed is
    /// an error, since what it references is then unknown and nothing may be swept.
    async fn manifest(&mut self, store: &Registry, repo: &str, d: Digest) -> Result<()> {
        let mut todo = vec![d];
        while let Some(d) = todo.pop() {
            if !self.manifests.insert((repo.to_string(), d)) {
                continue;
            }
            self.blobs.insert(d);
            if store.blob_size(&d).await?.is_none() {
                continue;
            }
            let bytes = store.get_small_blob(&d).await?;
            let refs = refs_of(&d, &bytes)?;
            for (b, _) in refs
                .config
                .iter()
                .copied()
                .chain(refs.layers.iter().map(|(b, s, _)| (*b, *s)))
            {
                self.blobs.insert(b);
                self.layer_links.insert((repo.to_string(), b));
            }
            todo.extend(refs.children.iter().map(|(c, _)| *c));
        }
        Ok(())
    }
}

/// Marks from every revision link, every tag and every version and environment record.
pub async fn mark(store: &Registry, scan: &Scan) -> Result<Marked> {
    let mut m = Marked::default();
    for (repo, d) in scan.revisions.keys() {
        m.manifest(store, repo, *d)
            .await
            .context("cannot mark: fix the store (s3dock verify) before collecting")?;
    }
    for ((repo, tag), _) in scan.tags.iter() {
        // A malformed tag link points nowhere; the revisions it may name are marked above.
        if let Ok(Some(d)) = store.tag_target(repo, tag).await {
            m.manifest(store, repo, d).await?;
        }
    }
    let (records, _) = access::all_records(store).await?;
    for (app, kind, name) in records {
        let d = match kind {
            Kind::Version => access::get_record::<VersionRecord>(store, &app, &name)
                .await
                .ok()
                .flatten()
                .map(|(r, _)| vec![r.digest]),
            Kind::Env => access::get_record::<EnvRecord>(store, &app, &name)
                .await
                .ok()
                .flatten()
                .map(|(r, _)| vec![r.digest]),
            Kind::Image => None,
        };
        for d in d.into_iter().flatten() {
            m.manifest(store, &app, d).await?;
        }
    }
    Ok(m)
}
