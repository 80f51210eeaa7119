//! Between the node's journal and the cloud: the volume (its marker and
//! key check), content-defined chunking, the uploader that publishes
//! committed versions and their events and reads the log back, and the
//! sync engine that folds the log into the remote tree (`remote`) and
//! plans the local actions that follow it (`planner`, `engine`); version
//! history and retention (`history`).

mod chain;
mod check;
pub mod checkpoint;
mod chunker;
mod cold;
mod engine;
mod fetcher;
mod history;
pub mod names;
mod payload;
pub mod planner;
mod remote;
mod uploader;
mod volume;

pub use chain::{Admitted, Breach, Guard, Link, LogHead, Refusal, log_head};
pub use check::{CheckError, CheckReport, check};
pub use chunker::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, for_each_chunk};
pub use cold::{ColdError, CoolReport, Cooler, ThawReport, TierBytes};
pub use engine::{ApplyReport, Engine, RemoteRecord};
pub use fetcher::Fetcher;
pub use history::{NodeInfo, cold_versions, nodes};
pub use names::{conflict_name, safe_path, utc_fields};
pub use payload::{FORMAT as EVENT_PAYLOAD_FORMAT, INLINE_CHUNKS, PublishedEvent};
pub use remote::{REMOTE_ROOT, RemoteTree};
pub use uploader::{HEARTBEAT, PruneReport, Uploader, UploaderStatus};
pub use volume::{FORMAT as VOLUME_FORMAT, Volume, VolumeError, VolumeHandle, read_epochs};
