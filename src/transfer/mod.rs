//! Moving images between archives and a registry: push (ingest an archive), pull
//! (write one, of one image or a bundle of several, whole or as a delta) and copy
//! (store to store), with their statistics.

pub mod copy;
pub mod delta;
pub mod ingest;
pub mod pull;
pub mod push;
pub mod stats;
