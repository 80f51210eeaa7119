//! Between the node's journal and the cloud: the volume (its marker and
//! key check), content-defined chunking, and the uploader that publishes
//! committed versions and their events, then reads the log back and
//! applies it (`vfs::apply`); version history and retention (`history`).

mod chunker;
mod fetcher;
mod history;
mod payload;
mod uploader;
mod volume;

pub use chunker::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, for_each_chunk};
pub use fetcher::Fetcher;
pub use history::{NodeInfo, nodes};
pub use payload::{INLINE_CHUNKS, PublishedEvent};
pub use uploader::{PruneReport, Uploader, UploaderStatus};
pub use volume::{Volume, VolumeError, VolumeHandle};
