//! s3dock: container images between `docker save` archives and S3 (or a local
//! directory) in the registry v2 storage layout, without a registry or a daemon.
//! The command line lives in the binary (`src/bin/s3dock`); this library has no
//! knowledge of it.

pub mod archive;
pub mod codec;
pub mod deploy;
pub mod lifecycle;
pub mod model;
pub mod registry;
pub mod release;
pub mod store;
pub mod transfer;
