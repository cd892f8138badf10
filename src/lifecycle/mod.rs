//! Store lifecycle: removing tags and revisions (`rm`), retention (`prune`), garbage
//! collection safe against concurrent pushes (`gc`, with `registry::gclock`), and
//! integrity checks (`verify`). Operations return typed results; the binary renders them.

pub mod gc;
pub mod graph;
pub mod prune;
pub mod rm;
pub mod verify;
