//! The hydration policy: which programs may download content that is only
//! in the cloud. Indexers and thumbnailers open every file they see; on an
//! on-demand folder that would download the whole volume. FUSE says which
//! process reads, so the policy can answer per program: download, read
//! only a capped range (a thumbnailer needs the head of a file), or refuse.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::locks::{Mutex, lock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Action {
    Download,
    /// Only bytes below this offset may be fetched.
    Range(u64),
    Refuse,
}

impl TryFrom<String> for Action {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "download" => Ok(Action::Download),
            "refuse" => Ok(Action::Refuse),
            _ => s
                .strip_prefix("range:")
                .and_then(crate::cache::parse_size)
                .map(Action::Range)
                .ok_or_else(|| format!("{s:?}: expected download, refuse or range:SIZE")),
        }
    }
}

impl From<Action> for String {
    fn from(a: Action) -> String {
        match a {
            Action::Download => "download".into(),
            Action::Refuse => "refuse".into(),
            Action::Range(n) => format!("range:{n}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// What programs not named get.
    #[serde(default = "download")]
    pub default: Action,
    /// By program name as the kernel knows it (`comm`: at most 15 bytes).
    #[serde(default = "default_programs")]
    pub programs: BTreeMap<String, Action>,
}

fn download() -> Action {
    Action::Download
}

/// Desktop search indexers are refused; thumbnailers get the first 4 MiB.
fn default_programs() -> BTreeMap<String, Action> {
    let refuse = [
        "tracker-miner-f",
        "tracker-extract",
        "localsearch-3",
        "localsearch-ext",
        "baloo_file",
        "baloo_file_extr",
        "updatedb",
        "updatedb.mlocat",
        "plocate-build",
        "mds",
        "mdworker",
        "mdworker_shared",
    ];
    let head = [
        "tumblerd",
        "ffmpegthumbnail",
        "totem-video-thu",
        "gdk-pixbuf-thum",
        "evince-thumbnai",
        "gsf-office-thum",
        "gnome-thumbnail",
        "quicklookd",
    ];
    refuse
        .iter()
        .map(|p| (p.to_string(), Action::Refuse))
        .chain(head.iter().map(|p| (p.to_string(), Action::Range(4 << 20))))
        .collect()
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default: Action::Download,
            programs: default_programs(),
        }
    }
}

/// What one program did to content only in the cloud.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ProgramCount {
    pub reads: u64,
    pub bytes: u64,
    pub refused: u64,
}

/// The policy with per-program counts (for `status --json`).
pub struct Gate {
    policy: Policy,
    counts: Mutex<HashMap<String, ProgramCount>>,
    /// Program names by thread id, for a second (ids are reused only after
    /// a thread is gone; the second bounds the error).
    names: Mutex<HashMap<u32, (String, std::time::Instant)>>,
}

/// The program name (`comm` of the process, not of the thread: thread
/// pools rename their threads) of the thread `tid` FUSE names, or `?`.
pub fn program_of(tid: u32) -> String {
    let tgid = crate::platform::tgid_of(tid).unwrap_or(tid);
    std::fs::read_to_string(format!("/proc/{tgid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// What a read may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fetch, prefetching no chunk that starts at or beyond the limit.
    Upto(Option<u64>),
    Refuse,
}

impl Gate {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            counts: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
        }
    }

    /// `program_of`, remembered per thread id for a second.
    pub fn program(&self, tid: u32) -> String {
        let now = std::time::Instant::now();
        let mut names = lock(&self.names);
        if let Some((name, at)) = names.get(&tid)
            && now.duration_since(*at) < std::time::Duration::from_secs(1)
        {
            return name.clone();
        }
        if names.len() > 4096 {
            names.retain(|_, (_, at)| now.duration_since(*at) < std::time::Duration::from_secs(1));
        }
        let name = program_of(tid);
        names.insert(tid, (name.clone(), now));
        name
    }

    /// Whether `program` may fetch `offset..offset + len`. A refusal is
    /// logged the first time per program.
    pub fn allow(&self, program: &str, offset: u64, len: u64) -> Verdict {
        let action = self
            .policy
            .programs
            .get(program)
            .copied()
            .unwrap_or(self.policy.default);
        let (ok, limit) = match action {
            Action::Download => (true, None),
            Action::Refuse => (false, None),
            Action::Range(cap) => (offset.saturating_add(len) <= cap, Some(cap)),
        };
        let mut counts = lock(&self.counts);
        let c = counts.entry(program.to_string()).or_default();
        if ok {
            c.reads += 1;
            c.bytes += len;
        } else {
            if c.refused == 0 {
                tracing::warn!(
                    program,
                    ?action,
                    "refused to download content only in the cloud for this program (hydration policy); logged once per program"
                );
            }
            c.refused += 1;
        }
        if ok {
            Verdict::Upto(limit)
        } else {
            Verdict::Refuse
        }
    }

    pub fn counts(&self) -> BTreeMap<String, ProgramCount> {
        lock(&self.counts)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_and_apply() {
        let p: Policy = serde_json::from_str(
            r#"{"default": "download", "programs": {"indexer": "refuse", "thumb": "range:1M"}}"#,
        )
        .unwrap();
        assert_eq!(p.programs["thumb"], Action::Range(1 << 20));
        let g = Gate::new(p);
        assert_eq!(g.allow("cat", 1 << 30, 4096), Verdict::Upto(None));
        assert_eq!(g.allow("indexer", 0, 1), Verdict::Refuse);
        assert_eq!(g.allow("indexer", 0, 1), Verdict::Refuse);
        assert_eq!(g.allow("thumb", 0, 1 << 20), Verdict::Upto(Some(1 << 20)));
        assert_eq!(g.allow("thumb", 1 << 20, 1), Verdict::Refuse);
        let c = g.counts();
        assert_eq!(c["indexer"].refused, 2);
        assert_eq!((c["thumb"].reads, c["thumb"].refused), (1, 1));
        assert_eq!(c["cat"].bytes, 4096);
        let back = serde_json::to_string(&Action::Range(5)).unwrap();
        assert_eq!(back, "\"range:5\"");
        assert!(serde_json::from_str::<Action>("\"sometimes\"").is_err());
        let d = Policy::default();
        assert_eq!(d.programs["tracker-miner-f"], Action::Refuse);
        assert!(
            serde_json::from_str::<Policy>("{}")
                .unwrap()
                .programs
                .contains_key("baloo_file")
        );
    }
}
