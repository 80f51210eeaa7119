//! A volume: the cloud's object store and event log, with the marker object
//! that names the volume and the fingerprint of its key, so a node with
//! another key is refused before it writes anything.
//!
//! Marker object `volume` (clear JSON, format 1): `volume_id`,
//! `key_fingerprint`, and `check`: the volume id sealed with the events key
//! (proves the key, not just its fingerprint).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::cloud::{self, Cloud, CloudError, CloudUrl, CloudUrlError, ColdSettings, ObjectStore};
use crate::crypto::{self, KEY_LEN, Keys};

const MARKER: &str = "volume";
/// Version of the marker object.
pub const FORMAT: u32 = 1;
const CHECK_AAD: &[u8] = b"latus volume check";

#[derive(Debug, Error)]
pub enum VolumeError {
    #[error(transparent)]
    Url(#[from] CloudUrlError),
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(
        "the key does not match this volume: the volume's key fingerprint is {volume}, this node's key fingerprint is {node}; \
         join with the volume's key file (latus init --key-file FILE)"
    )]
    KeyMismatch { volume: String, node: String },
    #[error("the volume marker is unreadable: {0}")]
    BadMarker(String),
    #[error("no volume at {0}: run `latus init --cloud URL` to create it")]
    Missing(String),
    #[error("key epochs file {path}: {source}")]
    Epochs {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format_version: u32,
    volume_id: Uuid,
    key_fingerprint: String,
    check: String,
}

pub struct Volume {
    pub id: Uuid,
    pub cloud: Cloud,
    pub keys: Arc<Keys>,
}

impl Volume {
    /// Opens the volume at `url` with `key`. With `create`, makes what is
    /// missing (bucket, table, folder, the volume itself); the returned
    /// lines say what was made.
    pub fn open(
        url: &str,
        key: &[u8; KEY_LEN],
        create: bool,
    ) -> Result<(Self, Vec<String>), VolumeError> {
        Self::open_cold(url, key, create, &ColdSettings::default())
    }

    /// `open`, with the volume's cold tier configured by `cold`.
    pub fn open_cold(
        url: &str,
        key: &[u8; KEY_LEN],
        create: bool,
        cold: &ColdSettings,
    ) -> Result<(Self, Vec<String>), VolumeError> {
        let parsed = CloudUrl::parse(url)?;
        let keys = Arc::new(Keys::derive(key));
        let mut created = Vec::new();
        let objects = cloud::connect_objects(&parsed, create, &mut created, cold)?;
        let marker = read_marker(&*objects, &keys, create, &mut created)
            .map_err(|e| e.unwrap_or_else(|| VolumeError::Missing(url.to_string())))?;
        let log = cloud::connect_log(&parsed, marker.volume_id, create, &mut created)?;
        Ok((
            Self {
                id: marker.volume_id,
                cloud: Cloud { objects, log },
                keys,
            },
            created,
        ))
    }

    /// The volume held by a cloud already connected (the in-memory cloud
    /// of tests and the simulation), made there with `create`.
    pub fn attach(cloud: Cloud, key: &[u8; KEY_LEN], create: bool) -> Result<Self, VolumeError> {
        let keys = Arc::new(Keys::derive(key));
        let marker = read_marker(&*cloud.objects, &keys, create, &mut Vec::new())
            .map_err(|e| e.unwrap_or_else(|| VolumeError::Missing("the attached cloud".into())))?;
        Ok(Self {
            id: marker.volume_id,
            cloud,
            keys,
        })
    }

    /// Associated data of an event payload: binds it to this volume and
    /// the node that published it.
    pub fn event_aad(&self, originator: Uuid) -> Vec<u8> {
        let mut aad = self.id.as_bytes().to_vec();
        aad.extend_from_slice(originator.as_bytes());
        aad
    }
}

/// The volume's marker, checked against `keys`; made when missing with
/// `create`. `Err(None)`: there is no volume.
fn read_marker(
    objects: &dyn ObjectStore,
    keys: &Keys,
    create: bool,
    created: &mut Vec<String>,
) -> Result<Marker, Option<VolumeError>> {
    let marker = match objects.get(MARKER) {
        Ok(bytes) => serde_json::from_slice::<Marker>(&bytes)
            .map_err(|e| VolumeError::BadMarker(e.to_string()))?,
        Err(e) if e.is_not_found() && create => {
            let id = Uuid::new_v4();
            let m = Marker {
                format_version: FORMAT,
                volume_id: id,
                key_fingerprint: keys.fingerprint().to_string(),
                check: crypto::hex(&keys.seal_event(CHECK_AAD, id.as_bytes())),
            };
            objects
                .put(
                    MARKER,
                    &serde_json::to_vec_pretty(&m).expect("marker serialises"),
                )
                .map_err(VolumeError::from)?;
            created.push(format!(
                "created volume {id} (key fingerprint {})",
                keys.fingerprint()
            ));
            m
        }
        Err(e) if e.is_not_found() => return Err(None),
        Err(e) => return Err(Some(e.into())),
    };
    if marker.format_version > FORMAT {
        return Err(Some(VolumeError::BadMarker(format!(
            "written by a newer latus (volume format {}; this latus reads {FORMAT}): upgrade latus",
            marker.format_version
        ))));
    }
    check_key(&marker, keys)?;
    Ok(marker)
}

fn check_key(marker: &Marker, keys: &Keys) -> Result<(), VolumeError> {
    let mismatch = || VolumeError::KeyMismatch {
        volume: marker.key_fingerprint.clone(),
        node: keys.fingerprint().to_string(),
    };
    if marker.key_fingerprint != keys.fingerprint() {
        return Err(mismatch());
    }
    let sealed = crypto::decode_hex(&marker.check)
        .ok_or_else(|| VolumeError::BadMarker("check is not hex".into()))?;
    match keys.open_event(CHECK_AAD, &sealed) {
        Ok(id) if id == marker.volume_id.as_bytes() => Ok(()),
        _ => Err(mismatch()),
    }
}

/// The node's volume, opened on first use: a node mounted while the cloud
/// was down connects when it answers again.
/// It also keeps the volume's later key epochs (in the home's
/// `node.epochs`, JSON `[{epoch, key}]`, 0600): every volume it opens gets
/// them.
pub struct VolumeHandle {
    url: String,
    key: [u8; KEY_LEN],
    opened: crate::locks::Mutex<Option<Arc<Volume>>>,
    epochs: crate::locks::Mutex<Vec<crypto::EpochKey>>,
    epochs_file: Option<std::path::PathBuf>,
    cold: ColdSettings,
    thawing: super::cold::ThawMarks,
}

impl VolumeHandle {
    /// `epochs_file`: where the key epochs are kept (`None`: in memory).
    pub fn new(
        url: String,
        key: [u8; KEY_LEN],
        opened: Option<Arc<Volume>>,
        epochs_file: Option<std::path::PathBuf>,
    ) -> Self {
        let epochs = epochs_file
            .as_deref()
            .map(|p| match read_epochs(p) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "the volume's key epochs are unreadable: records sealed with them will not open");
                    Vec::new()
                }
            })
            .unwrap_or_default();
        if let Some(v) = &opened {
            apply_epochs(&v.keys, &epochs);
        }
        Self {
            url,
            key,
            opened: crate::locks::Mutex::new(opened),
            epochs: crate::locks::Mutex::new(epochs),
            epochs_file,
            cold: ColdSettings::default(),
            thawing: Default::default(),
        }
    }

    /// The chunks this node asked restores of (`sync::cold`).
    pub fn thawing(&self) -> &super::cold::ThawMarks {
        &self.thawing
    }

    /// The cold tier of volumes opened from now on.
    pub fn with_cold(mut self, cold: ColdSettings) -> Self {
        self.cold = cold;
        self
    }

    pub fn cold(&self) -> &ColdSettings {
        &self.cold
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The lock is not held across the network: a reader fetching content
    /// never waits behind the uploader's attempt to reach a slow cloud.
    pub fn get(&self) -> Result<Arc<Volume>, VolumeError> {
        if let Some(v) = crate::locks::lock(&self.opened).as_ref() {
            return Ok(v.clone());
        }
        let (opened, _) = Volume::open_cold(&self.url, &self.key, false, &self.cold)?;
        apply_epochs(&opened.keys, &crate::locks::lock(&self.epochs));
        let mut v = crate::locks::lock(&self.opened);
        Ok(v.get_or_insert_with(|| Arc::new(opened)).clone())
    }

    /// Adds key epoch `epoch`: kept durably first, then used for what is
    /// sealed from now on.
    pub fn add_epoch(&self, epoch: u64, master: &[u8; KEY_LEN]) -> Result<(), VolumeError> {
        let mut epochs = crate::locks::lock(&self.epochs);
        if epochs.iter().any(|e| e.epoch == epoch) {
            return Ok(());
        }
        let mut next = epochs.clone();
        next.push(crypto::EpochKey::new(epoch, master));
        next.sort_by_key(|e| e.epoch);
        if let Some(path) = &self.epochs_file {
            write_epochs(path, &next).map_err(|source| VolumeError::Epochs {
                path: path.clone(),
                source,
            })?;
        }
        *epochs = next;
        if let Some(v) = crate::locks::lock(&self.opened).as_ref() {
            apply_epochs(&v.keys, &epochs);
        }
        Ok(())
    }
}

fn apply_epochs(keys: &Keys, epochs: &[crypto::EpochKey]) {
    for e in epochs {
        if let Ok(master) = e.master() {
            keys.add_epoch(e.epoch, &master);
        }
    }
}

/// The key epochs kept in `path` (none when it does not exist).
pub fn read_epochs(path: &std::path::Path) -> Result<Vec<crypto::EpochKey>, VolumeError> {
    let io = |source| VolumeError::Epochs {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let epochs: Vec<crypto::EpochKey> = serde_json::from_slice(&bytes)
                .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
            for e in &epochs {
                e.master()
                    .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
            }
            Ok(epochs)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(e)),
    }
}

/// Writes the key epochs to `path` whole (temporary file, synced, renamed).
pub fn write_epochs(path: &std::path::Path, epochs: &[crypto::EpochKey]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(epochs).expect("epochs serialise"))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
