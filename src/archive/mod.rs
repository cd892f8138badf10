//! The one place that knows archive formats: `docker save` (legacy and Docker
//! 25+), skopeo/podman `docker-archive`, and OCI image-layout archives. `read`
//! streams an archive in a single pass; `write` produces one `docker load`,
//! `podman load` and skopeo accept, or an s3dock delta archive (layers the far side
//! holds left out) that only `s3dock push` reads.

mod read;
mod write;

pub use read::{
    read_archive, read_archive_for, ArchiveError, ArchiveImage, FromIndex, LayerEntry, LayerSink,
    Platforms, SunkLayer,
};
pub use write::{ArchiveEntryImage, ArchiveWriter, Format, OmittedBlob, Output, Writeback};
