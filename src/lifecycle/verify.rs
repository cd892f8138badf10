//! `verify`: checks a store's integrity and reports each problem on its own.
//! Every tag, revision, index, version and environment must resolve; link files must
//! be well-formed and name what their key names; every referenced blob must be
//! present with the right size; dedup-index entries must name stored blobs. `deep`
//! re-hashes blob bytes and each layer's diff_id. `repair` applies only safe fixes:
//! dropping dangling index entries, restoring missing `_layers` links of stored blobs.

use super::graph::{refs_of, Scan};
use crate::codec::DiffIdHasher;
use crate::model::digest::{Digest, Hasher};
use crate::model::image::{layer_compression, Config};
use crate::model::reference::Reference;
use crate::model::text::printable;
use crate::registry::Registry;
use crate::release::access;
use crate::release::records::{EnvRecord, Kind, VersionRecord};
use anyhow::Result;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only these references (`app:tag`, `app@digest`); empty: the whole store.
    pub refs: Vec<String>,
    pub deep: bool,
    pub repair: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Short kind: missing-blob, size-mismatch, corrupt-blob, bad-diff-id, bad-link,
    /// dangling-tag, dangling-revision, dangling-record, bad-record, bad-manifest,
    /// missing-layer-link, dangling-index-entry.
    pub kind: &'static str,
    /// What it is about (a reference, a key or a digest).
    pub subject: String,
    pub message: String,
    pub repaired: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub tags: usize,
    pub manifests: usize,
    pub blobs: usize,
    pub index_entries: usize,
    pub records: usize,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn clean(&self) -> bool {
        self.problems.iter().all(|p| p.repaired)
    }
}

struct Checker<'a> {
    store: &'a Registry,
    opts: &'a VerifyOptions,
    scan: Scan,
    report: VerifyReport,
    manifests_seen: HashSet<(String, Digest)>,
    /// Blob → whether it checked out (size, and with `deep` its bytes).
    blobs_seen: HashMap<Digest, bool>,
}

impl Checker<'_> {
    fn problem(&mut self, kind: &'static str, subject: impl Into<String>, message: String) {
        self.report.problems.push(Problem {
            kind,
            subject: printable(&subject.into()).into_owned(),
            message: printable(&message).into_owned(),
            repaired: false,
        });
    }

    /// Reads a link and checks it is well-formed; `expect` is the digest its key names.
    async fn link(&mut self, key: &str, expect: Option<Digest>) -> Option<Digest> {
        match self.store.read_link(key).await {
            Ok(Some(d)) => {
                if expect.is_some_and(|e| e != d) {
                    self.problem(
                        "bad-link",
                        key,
                        format!("link {key} holds {d}, not the digest its path names"),
                    );
                }
                Some(d)
            }
            Ok(None) => None,
            Err(e) => {
                self.problem("bad-link", key, format!("{e:#}"));
                None
            }
        }
    }

    /// A blob's presence and size (and with `deep`, its digest); true when fine.
    async fn blob(&mut self, d: &Digest, size: u64, used_by: &str) -> Result<bool> {
        if let Some(ok) = self.blobs_seen.get(d) {
            return Ok(*ok);
        }
        self.report.blobs += 1;
        let ok = match self.store.blob_size(d).await? {
            None => {
                self.problem(
                    "missing-blob",
                    d.to_string(),
                    format!("blob {d} ({used_by}) is missing from the store"),
                );
                false
            }
            Some(s) if s != size => {
                self.problem(
                    "size-mismatch",
                    d.to_string(),
                    format!("blob {d} ({used_by}) is {s} bytes in the store, {size} expected (truncated or replaced)"),
                );
                false
            }
            Some(_) if self.opts.deep => {
                let actual = self.hash(d, size, None).await?.0;
                if actual != *d {
                    self.problem(
                        "corrupt-blob",
                        d.to_string(),
                        format!("blob {d} ({used_by}) is corrupt: its content hashes to {actual}"),
                    );
                }
                actual == *d
            }
            Some(_) => true,
        };
        self.blobs_seen.insert(*d, ok);
        Ok(ok)
    }

    /// Streams a blob in part-size chunks: its digest, and its diff_id when `layer`
    /// gives the compression.
    async fn hash(
        &self,
        d: &Digest,
        size: u64,
        layer: Option<crate::codec::Compression>,
    ) -> Result<(Digest, Option<Result<Digest>>)> {
        let key = self.store.layout().blob_data(d);
        let mut h = Hasher::new();
        let diff = layer.map(DiffIdHasher::new);
        let chunk = self.store.part_size.max(1 << 20);
        let mut at = 0;
        while at < size {
            let n = (size - at).min(chunk) as usize;
            let b = self.store.read_range(&key, at, n).await?;
            h.update(&b);
            if let Some(x) = &diff {
                x.feed(b);
            }
            at += n as u64;
        }
        Ok((h.finish(), diff.map(DiffIdHasher::finish)))
    }

    /// A manifest or index of `repo` and everything it references.
    async fn manifest(&mut self, repo: &str, d: Digest, named_by: &str) -> Result<()> {
        if !self.manifests_seen.insert((repo.to_string(), d)) {
            return Ok(());
        }
        self.report.manifests += 1;
        if !self.scan.revisions.contains_key(&(repo.to_string(), d)) {
            self.problem(
                "dangling-revision",
                format!("{repo}@{d}"),
                format!("{named_by} names {repo}@{d}, which has no revision link (the registry cannot serve it)"),
            );
        }
        if self.store.blob_size(&d).await?.is_none() {
            self.problem(
                "missing-blob",
                d.to_string(),
                format!("manifest {d} of {repo} ({named_by}) is missing from the store"),
            );
            return Ok(());
        }
        let bytes = match self.store.get_small_blob(&d).await {
            Ok(b) => b,
            Err(e) => {
                self.problem("corrupt-blob", d.to_string(), format!("{e:#}"));
                return Ok(());
            }
        };
        let refs = match refs_of(&d, &bytes) {
            Ok(r) => r,
            Err(e) => {
                self.problem("bad-manifest", d.to_string(), format!("{e:#}"));
                return Ok(());
            }
        };
        for (c, _) in &refs.children {
            Box::pin(self.manifest(repo, *c, &format!("index {d}"))).await?;
        }
        let Some((cd, csize)) = refs.config else {
            return Ok(());
        };
        let what = format!("{repo}@{d}");
        self.layer_link(repo, &cd).await?;
        let config = if self.blob(&cd, csize, &format!("config of {what}")).await? {
            match self.store.get_small_blob(&cd).await.and_then(Config::parse) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.problem("bad-manifest", cd.to_string(), format!("{e:#}"));
                    None
                }
            }
        } else {
            None
        };
        for (i, (ld, lsize, media)) in refs.layers.iter().enumerate() {
            self.layer_link(repo, ld).await?;
            let seen = self.blobs_seen.contains_key(ld);
            let ok = self
                .blob(ld, *lsize, &format!("layer {i} of {what}"))
                .await?;
            // The diff_id needs the bytes decompressed: once per layer blob, with --deep.
            if !(ok && self.opts.deep && !seen) {
                continue;
            }
            let (Some(cfg), Ok(c)) = (&config, layer_compression(media)) else {
                continue;
            };
            let Some(expected) = cfg.diff_ids.get(i).copied() else {
                self.problem(
                    "bad-manifest",
                    what.clone(),
                    format!("{what} has more layers than its config has diff_ids"),
                );
                continue;
            };
            match self.hash(ld, *lsize, Some(c)).await?.1 {
                Some(Ok(got)) if got == expected => {}
                Some(Ok(got)) => self.problem(
                    "bad-diff-id",
                    ld.to_string(),
                    format!("layer {i} of {what} ({ld}) decompresses to diff_id {got}, config says {expected}"),
                ),
                Some(Err(e)) => self.problem(
                    "bad-diff-id",
                    ld.to_string(),
                    format!("layer {i} of {what} ({ld}) does not decompress: {e:#}"),
                ),
                None => {}
            }
        }
        Ok(())
    }

    /// The `_layers` link a manifest of `repo` needs for blob `d`; restored by
    /// `repair` when the blob exists.
    async fn layer_link(&mut self, repo: &str, d: &Digest) -> Result<()> {
        if self.scan.layers.contains_key(&(repo.to_string(), *d)) {
            return Ok(());
        }
        self.problem(
            "missing-layer-link",
            format!("{repo}@{d}"),
            format!("{repo} has no _layers link for {d} (the registry cannot serve it)"),
        );
        if self.opts.repair && self.store.blob_size(d).await?.is_some() {
            self.store.link_layer(repo, d).await?;
            self.report
                .problems
                .last_mut()
                .expect("just pushed")
                .repaired = true;
            self.scan.layers.insert(
                (repo.to_string(), *d),
                crate::store::ObjectInfo {
                    key: self.store.layout().layer_link(repo, d),
                    size: 71,
                    modified: None,
                },
            );
        }
        Ok(())
    }

    async fn tag(&mut self, repo: &str, tag: &str) -> Result<()> {
        self.report.tags += 1;
        let key = self.store.layout().tag_current(repo, tag);
        let reference = format!("{repo}:{tag}");
        match self.link(&key, None).await {
            Some(d) if self.store.blob_size(&d).await?.is_none() => {
                self.problem(
                    "dangling-tag",
                    reference.clone(),
                    format!("tag {reference} points at {d}, which is not in the store"),
                );
                Ok(())
            }
            Some(d) => self.manifest(repo, d, &format!("tag {reference}")).await,
            None if self.store.object_size(&key).await?.is_none() => {
                self.problem(
                    "dangling-tag",
                    reference.clone(),
                    format!("tag {reference} does not exist"),
                );
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn whole_store(&mut self) -> Result<()> {
        let tags: Vec<(String, String)> = self.scan.tags.keys().cloned().collect();
        for (repo, tag) in tags {
            self.tag(&repo, &tag).await?;
        }
        let revisions: Vec<(String, Digest, String)> = self
            .scan
            .revisions
            .iter()
            .map(|((r, d), o)| (r.clone(), *d, o.key.clone()))
            .collect();
        for (repo, d, key) in revisions {
            self.link(&key, Some(d)).await;
            self.manifest(&repo, d, "its revision link").await?;
        }
        let links: Vec<(Digest, String)> = self
            .scan
            .layers
            .iter()
            .map(|((_, d), o)| (*d, o.key.clone()))
            .chain(
                self.scan
                    .tag_index
                    .iter()
                    .map(|(_, _, d, o)| (*d, o.key.clone())),
            )
            .collect();
        for (d, key) in links {
            self.link(&key, Some(d)).await;
        }
        self.records().await?;
        self.index_entries().await
    }

    /// Versions and environments resolve to a manifest of their app.
    async fn records(&mut self) -> Result<()> {
        let (records, malformed) = access::all_records(self.store).await?;
        for m in malformed {
            self.problem("bad-record", m.key.clone(), m.to_string());
        }
        for (app, kind, name) in records {
            self.report.records += 1;
            let target = match kind {
                Kind::Version => access::get_record::<VersionRecord>(self.store, &app, &name)
                    .await
                    .map(|r| r.map(|(r, _)| r.digest)),
                Kind::Env => access::get_record::<EnvRecord>(self.store, &app, &name)
                    .await
                    .map(|r| r.map(|(r, _)| r.digest)),
                Kind::Image => access::get_record::<crate::release::records::ImageRecord>(
                    self.store, &app, &name,
                )
                .await
                .map(|_| None),
            };
            let what = match kind {
                Kind::Version => "version",
                Kind::Env => "environment",
                Kind::Image => "image record",
            };
            match target {
                Ok(Some(d)) => {
                    if !self.store.has_revision(&app, &d).await.unwrap_or(false) {
                        self.problem(
                            "dangling-record",
                            format!("{app}:{name}"),
                            format!("{what} {app}:{name} points at {d}, which is not in the store"),
                        );
                    } else {
                        self.manifest(&app, d, &format!("{what} {app}:{name}"))
                            .await?;
                    }
                }
                Ok(None) => {}
                Err(e) => self.problem("bad-record", format!("{app}:{name}"), e.to_string()),
            }
        }
        Ok(())
    }

    async fn index_entries(&mut self) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct IndexRecord {
            digest: Digest,
            size: u64,
        }
        let layout = self.store.layout().clone();
        for o in self
            .store
            .list_objects(&layout.diffid_index_prefix())
            .await?
        {
            if layout.diffid_of_index_key(&o.key).is_none() {
                continue;
            }
            self.report.index_entries += 1;
            let rec = self.store.get_json::<IndexRecord>(&o.key).await;
            let why = match rec {
                Err(e) => Some(format!("{e:#}")),
                Ok(None) => None,
                Ok(Some(r)) => match self.store.blob_size(&r.digest).await? {
                    Some(s) if s == r.size => None,
                    Some(s) => Some(format!(
                        "dedup index entry {} names blob {} of {} bytes, the store has {s}",
                        o.key, r.digest, r.size
                    )),
                    None => Some(format!(
                        "dedup index entry {} names blob {}, which is missing",
                        o.key, r.digest
                    )),
                },
            };
            if let Some(why) = why {
                self.problem("dangling-index-entry", o.key.clone(), why);
                if self.opts.repair {
                    self.store.delete(&o.key).await?;
                    self.report
                        .problems
                        .last_mut()
                        .expect("just pushed")
                        .repaired = true;
                }
            }
        }
        Ok(())
    }
}

pub async fn verify(store: &Registry, opts: &VerifyOptions) -> Result<VerifyReport> {
    let mut c = Checker {
        store,
        opts,
        scan: Scan::read(store).await?,
        report: VerifyReport::default(),
        manifests_seen: HashSet::new(),
        blobs_seen: HashMap::new(),
    };
    if opts.refs.is_empty() {
        c.whole_store().await?;
    } else {
        let mut seen = BTreeSet::new();
        for r in &opts.refs {
            if !seen.insert(r.clone()) {
                continue;
            }
            let parsed = Reference::parse(r)?;
            match (&parsed.tag, parsed.digest) {
                (_, Some(d)) => c.manifest(&parsed.name, d, r).await?,
                (t, None) => {
                    c.tag(&parsed.name, t.as_deref().unwrap_or("latest"))
                        .await?
                }
            }
        }
    }
    Ok(c.report)
}
