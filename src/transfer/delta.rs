//! Delta bundles: the layer blobs a pull leaves out because the far side already holds
//! them (`--exclude REF`, `--exclude-from FILE`), and the check a push of such an archive
//! makes before it writes anything: the store must hold every one, by digest and size.

use crate::archive::OmittedBlob;
use crate::model::digest::Digest;
use crate::model::reference::Reference;
use crate::registry::Registry;
use crate::transfer::pull::ResolvedTarget;
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;

/// Blobs the far side holds, each with the image it came from (None: a listed digest).
#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    blobs: HashMap<Digest, Option<String>>,
}

/// Digests a `--exclude-from` list may hold; more is not a list of one side's images.
const MAX_LISTED: usize = 1_000_000;

impl Exclusions {
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.blobs.contains_key(d)
    }

    /// The image that holds `d`, if it was excluded by reference.
    pub fn source(&self, d: &Digest) -> Option<&str> {
        self.blobs.get(d).and_then(|s| s.as_deref())
    }

    /// Every layer of `r`, resolved as the images pulled are: for `platform`, or with
    /// every platform of a multi-platform image (`all_platforms`).
    pub async fn add_image(
        &mut self,
        store: &Registry,
        r: &Reference,
        platform: Option<&str>,
        all_platforms: bool,
    ) -> Result<()> {
        let target = if all_platforms {
            super::pull::resolve_all(store, r).await?
        } else {
            ResolvedTarget::Image(super::pull::resolve(store, r, platform).await?)
        };
        let name = r.to_string();
        for l in target.images().into_iter().flat_map(|img| &img.layers) {
            self.blobs
                .entry(l.digest)
                .or_insert_with(|| Some(name.clone()));
        }
        Ok(())
    }

    /// A list of digests (`sha256:<hex>`), one a line; blank lines and `#` comments are
    /// skipped. `what` names the list in errors.
    pub fn add_list(&mut self, text: &str, what: &str) -> Result<()> {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let d: Digest = line.parse().map_err(|_| {
                anyhow!(
                    "{what} line {}: expected a digest sha256:<64 hex>, found {:?}",
                    n + 1,
                    crate::model::text::excerpt(line.as_bytes())
                )
            })?;
            self.blobs.entry(d).or_insert(None);
            if self.blobs.len() > MAX_LISTED {
                bail!("{what} lists more than {MAX_LISTED} digests");
            }
        }
        Ok(())
    }
}

/// How many missing blobs an error names.
const NAMED: usize = 3;

/// The omitted blobs `store` lacks (absent, or with another size).
pub async fn missing(store: &Registry, omitted: &[OmittedBlob]) -> Result<Vec<OmittedBlob>> {
    let mut out = Vec::new();
    for o in omitted {
        if store.blob_size(&o.digest).await? != Some(o.size) {
            out.push(o.clone());
        }
    }
    Ok(out)
}

/// Fails unless `store` holds every blob a delta archive leaves out: one line naming the
/// first few missing blobs, their count and the images that would supply them.
pub async fn check_store_holds(store: &Registry, omitted: &[OmittedBlob]) -> Result<()> {
    let missing = missing(store, omitted).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let mut named: Vec<String> = missing
        .iter()
        .take(NAMED)
        .map(|o| format!("sha256:{}…", &o.digest.hex()[..12]))
        .collect();
    if missing.len() > NAMED {
        named.push(format!("and {} more", missing.len() - NAMED));
    }
    let mut from: Vec<&str> = missing.iter().filter_map(|o| o.from.as_deref()).collect();
    from.sort();
    from.dedup();
    let supply = if from.is_empty() {
        "push the images the --exclude-from list was made from there first".to_string()
    } else {
        format!("push {} there first", from.join(", "))
    };
    bail!(
        "store {} lacks {} blob(s) this delta archive leaves out ({}): {supply}, or send a full archive",
        store.display,
        missing.len(),
        named.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_digest_lists() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let mut e = Exclusions::default();
        e.add_list(
            &format!("# from app:v1\n{a}\n\n  {b}  # base\n"),
            "have.txt",
        )
        .unwrap();
        assert!(e.contains(&a.parse().unwrap()) && e.contains(&b.parse().unwrap()));
        assert_eq!(e.source(&a.parse().unwrap()), None);
        let err = e.add_list("sha256:xyz\n", "have.txt").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("have.txt line 1: expected a digest"),
            "{err}"
        );
    }
}
