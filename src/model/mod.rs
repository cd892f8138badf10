//! What an image is, independent of where it is stored: digests, references,
//! media types, manifests, configs and platforms.

pub mod compression;
pub mod digest;
pub mod image;
pub mod reference;
pub mod text;
pub mod units;
