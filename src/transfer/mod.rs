//! Moving images between archives and a registry: push (ingest an archive), pull
//! (write one, of one image or a bundle of several, whole or as a delta) and copy
//! (store to store), with their statistics.

pub mod copy;
pub mod delta;
pub mod ingest;
pub mod pull;
pub mod push;
pub mod stats;

/// Small requests made per blob (HEADs, link files): this many at once, so an image of
/// many layers does not pay one round trip per layer, one after another.
const SMALL_REQUESTS: usize = 16;
