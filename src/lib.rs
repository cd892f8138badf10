//! s3dock: container images between `docker save` archives and S3 (or a local
//! directory) in the registry v2 storage layout, without a registry or a daemon.

pub mod archive;
pub mod cli;
pub mod codec;
pub mod config;
pub mod model;
pub mod registry;
pub mod release;
pub mod store;
pub mod transfer;
