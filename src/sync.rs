//! Between the node's journal and the cloud: the volume (its marker and
//! key check), content-defined chunking, and the uploader that publishes
//! committed versions and their events.

mod chunker;
mod fetcher;
mod payload;
mod uploader;
mod volume;

pub use chunker::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, for_each_chunk};
pub use fetcher::Fetcher;
pub use payload::{INLINE_CHUNKS, PublishedEvent};
pub use uploader::{Uploader, UploaderStatus};
pub use volume::{Volume, VolumeError, VolumeHandle};
