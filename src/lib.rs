//! s3dock: container images between `docker save` archives and S3 (or a local
//! directory) in the registry v2 storage layout, without a registry or a daemon.

pub mod archive;
pub mod audit;
pub mod cli;
pub mod compress;
pub mod config;
pub mod digest;
pub mod image;
pub mod layout;
pub mod pull;
pub mod push;
pub mod reference;
pub mod release;
pub mod stats;
pub mod store;
