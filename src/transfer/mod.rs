//! Moving images between archives and a registry: push (ingest an archive) and
//! pull (write one), with their statistics.

pub mod copy;
pub mod ingest;
pub mod pull;
pub mod push;
pub mod stats;
