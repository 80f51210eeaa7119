//! Command line: parses arguments and runs one command. Talks to the daemon
//! over the control socket while mounted; opens the node directly otherwise.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::control::{self, ControlError, Request};
use crate::daemon::{self, MountpointState};
use crate::event::Event;
use crate::home::Home;
use crate::meta::Meta;
use crate::store::ContentStore;
use crate::sync::Volume;
use std::os::unix::fs::OpenOptionsExt;

const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A daemon opening a large volume reads its whole tree first (about 40 s
/// per million files here); it is waited for while it runs.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(600);
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(120);
const LOG_PAGE: usize = 10_000;

#[derive(Debug, Parser)]
#[command(
    name = "latus",
    version,
    long_version = crate::formats::long_version(),
    about = "Your files, on every computer, encrypted before they leave it."
)]
pub struct Cli {
    /// The node's state folder (default: $XDG_DATA_HOME/latus or ~/.local/share/latus).
    #[arg(long, env = "LATUS_HOME", global = true)]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create this node: identity, key, database; with --key-file, join
    /// an existing volume (never makes a new one).
    #[command(
        after_help = "Examples:\n  latus init\n  latus init --cloud dir:/mnt/nas/latus --name desk\n  latus init --cloud dir:/mnt/nas/latus --key-file key.json --name laptop\n  latus --home ~/latus-b init --cloud \"aws://my-bucket?table=latus\" --key-file key.json"
    )]
    Init {
        /// Cloud URL: dir:PATH (default: a folder in the home) or aws://BUCKET?table=TABLE.
        #[arg(long)]
        cloud: Option<String>,
        /// Friendly node name, shown in conflict copies (default: the host
        /// name; with a home that is not the default, host-HOMEDIR).
        #[arg(long)]
        name: Option<String>,
        /// Join the volume of this key file (from `latus key export` on a
        /// node of the volume); needs --cloud.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Cap of the local cache (e.g. 20G; default: a tenth of the disk).
        #[arg(long)]
        cache_size: Option<String>,
    },
    /// Mount the latus folder (initialises the node, with a new volume, on
    /// first use).
    #[command(
        after_help = "Examples:\n  mkdir -p ~/Latus && latus mount ~/Latus\n  latus mount ~/Latus --offline"
    )]
    Mount {
        /// An existing folder; what it holds is adopted into the volume.
        mountpoint: PathBuf,
        /// Serve in this process instead of starting a background daemon.
        #[arg(long)]
        foreground: bool,
        /// Do not contact the cloud: changes are journaled and queued, and
        /// published by a later mount without this flag.
        #[arg(long)]
        offline: bool,
        /// Programs in the folder cannot be executed (the folder is always
        /// mounted nosuid and nodev).
        #[arg(long)]
        noexec: bool,
        /// Let other users (Samba, containers, other accounts) use the
        /// folder; the kernel checks their access against the mode bits.
        /// Non-root users need user_allow_other in /etc/fuse.conf.
        #[arg(long)]
        allow_other: bool,
    },
    /// Flush, unmount and stop the daemon.
    #[command(after_help = "Examples:\n  latus unmount ~/Latus")]
    Unmount {
        /// Where the folder is mounted.
        mountpoint: PathBuf,
    },
    /// Rebuild this node's database (while not mounted) from its journal,
    /// the volume's log and the local store, keeping the old one aside;
    /// also catches up a home restored from an old copy.
    #[command(
        after_help = "Examples:\n  latus unmount ~/Latus && latus repair && latus mount ~/Latus"
    )]
    Repair {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Whether this node is in sync, and what waits or needs you; or one
    /// path's state.
    #[command(
        after_help = "Examples:\n  latus status\n  latus status ~/Latus/notes.txt\n  latus status --json | jq .queue"
    )]
    Status {
        /// A file or folder in the latus folder (default: the whole node).
        path: Option<PathBuf>,
        /// Machine-readable output (the fields README lists).
        #[arg(long)]
        json: bool,
    },
    /// Conflict copies (versions that lost their name when two nodes
    /// changed a file at once), and resolving one.
    #[command(
        after_help = "Examples:\n  latus conflicts\n  latus conflicts ~/Latus/report.txt --keep theirs\n  latus conflicts \"~/Latus/report (conflict from desk 2026-12-02 140509).txt\" --keep both"
    )]
    Conflicts {
        /// The conflict copy (or the file it conflicts with) to resolve.
        path: Option<PathBuf>,
        /// Which version keeps the name: mine (this node's), theirs (the
        /// other node's), or both (the copy gets a plain name of its own).
        /// The other version stays in history (`latus versions`).
        #[arg(long, requires = "path")]
        keep: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Publish everything committed and read the whole event log.
    #[command(after_help = "Examples:\n  latus sync --wait\n  latus sync --wait --timeout 60")]
    Sync {
        /// Wait until done (non-zero exit with the reason if the cloud cannot be reached).
        #[arg(long)]
        wait: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// The volume key: export it to join other nodes, or show its fingerprint.
    Key {
        #[command(subcommand)]
        command: KeyCmd,
    },
    /// Every version of a path in the volume's history.
    #[command(after_help = "Examples:\n  latus versions ~/Latus/report.txt")]
    Versions {
        /// A file in the latus folder (also one deleted since).
        path: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Bring back an old version (as a new change), also of a deleted file;
    /// with --at on a folder, the whole folder as it was then.
    #[command(
        after_help = "Examples:\n  latus restore ~/Latus/report.txt\n  latus restore ~/Latus/report.txt --version 1234 --to ~/Latus/report-old.txt\n  latus restore ~/Latus/photos --at 1h30m --dry-run\n  latus restore ~/Latus/photos --at \"2026-11-26 14:05\""
    )]
    Restore {
        /// A file or folder in the latus folder (also one deleted since).
        path: PathBuf,
        /// The version's mivui (see `latus versions`).
        #[arg(long, conflicts_with = "at")]
        version: Option<u64>,
        /// A time: 2026-11-26T14:05:00 or "2026-11-26 14:05" (local time;
        /// add Z for UTC), unix seconds, or an age like 30m, 2h, 1h30m, 3d.
        #[arg(long)]
        at: Option<String>,
        /// Where to put it (default: where it was).
        #[arg(long)]
        to: Option<PathBuf>,
        /// Change nothing: list what the restore would change.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove the versions the retention setting no longer keeps (objects
    /// included); current versions and every chunk they use stay.
    Prune {
        /// Only say what would go.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Checks the volume against its log: every chain and the log's head
    /// verify, every chunk a version in history needs is in the cloud
    /// (and, with --read-data, opens and holds what its name promises).
    /// Exits non-zero if anything is wrong.
    #[command(after_help = "Examples:\n  latus check\n  latus check --read-data")]
    Check {
        /// Also download every chunk and check it opens and hashes right.
        #[arg(long)]
        read_data: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Every node of the volume; `nodes remove ID` forgets one (its files stay).
    #[command(
        after_help = "Examples:\n  latus nodes\n  latus nodes remove 0b6f6e0e-2f3a-4c1d-9a47-3f0a2d6a1b2c"
    )]
    Nodes {
        #[command(subcommand)]
        command: Option<NodesCmd>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Keep PATH offline: download everything below it now (with progress),
    /// and future changes eagerly.
    #[command(after_help = "Examples:\n  latus pin ~/Latus/photos")]
    Pin {
        /// A folder or file in the latus folder.
        path: PathBuf,
    },
    /// Back to automatic placement (the cache decides).
    #[command(after_help = "Examples:\n  latus unpin ~/Latus/photos")]
    Unpin {
        /// A folder or file in the latus folder.
        path: PathBuf,
    },
    /// Online-only: evict the local copies below PATH that are safely in the
    /// cloud; they stay listed and download when opened.
    #[command(after_help = "Examples:\n  latus free ~/Latus/videos")]
    Free {
        /// A folder or file in the latus folder.
        path: PathBuf,
    },
    /// Cold storage: move the content below PATH to the volume's cold tier
    /// (cold_class on aws, cold_dir on dir:), then free the local copies.
    /// Files stay listed; reading one in a restore-first class (GLACIER,
    /// DEEP_ARCHIVE) starts a restore and fails with EAGAIN until it is
    /// done (see `latus thaw`); a cold folder that is not connected fails
    /// reads with ENOMEDIUM. `pin`, `unpin` or `free` move it back.
    #[command(
        after_help = "Settings: cold-class GLACIER_IR|GLACIER|DEEP_ARCHIVE, restore-tier Expedited|Standard|Bulk, restore-days N, cold-dir PATH, cold-after-days D\n\nExamples:\n  latus set cold-class GLACIER\n  latus cold ~/Latus/photos/2015"
    )]
    Cold {
        /// A folder or file in the latus folder.
        path: PathBuf,
    },
    /// Request restores of the cold content below PATH (GLACIER,
    /// DEEP_ARCHIVE) so it can be read; --wait shows progress until every
    /// file is ready.
    #[command(after_help = "Examples:\n  latus thaw ~/Latus/photos/2015 --wait")]
    Thaw {
        /// A folder or file in the latus folder.
        path: PathBuf,
        /// Wait until everything below PATH reads.
        #[arg(long)]
        wait: bool,
    },
    /// Never leaves this node: no upload, no event (other nodes stop seeing
    /// it); --off publishes it again.
    #[command(
        after_help = "Examples:\n  latus local-only ~/Latus/scratch\n  latus local-only ~/Latus/scratch --off"
    )]
    LocalOnly {
        /// A folder or file in the latus folder.
        path: PathBuf,
        /// Publish it again (back to automatic).
        #[arg(long)]
        off: bool,
    },
    /// The web app: status, activity, conflicts, files, history, nodes,
    /// settings. Opens it in the browser when there is a desktop session.
    #[command(after_help = "Examples:\n  latus ui\n  latus ui --print-url")]
    Ui {
        /// Only print the address (with its session token) and exit.
        #[arg(long)]
        print_url: bool,
    },
    /// Change a setting in config.json (the cache cap applies at once, the
    /// rest at the next mount).
    #[command(
        after_help = "Settings: cache-size SIZE, poll-ms MS, keep-versions N|all, keep-days D|forever, cold-after-days D|never, cold-class GLACIER_IR|GLACIER|DEEP_ARCHIVE, restore-tier Expedited|Standard|Bulk, restore-days N, cold-dir PATH|none, conflict-policy newest|first, checkpoint-every N|never, hydration PROGRAM=download|refuse|range:SIZE|default, hydration-default ACTION, ignore PATTERN[,PATTERN...], name NAME\n\nExamples:\n  latus set cache-size 20G\n  latus set poll-ms 500\n  latus set hydration baloo_file=refuse"
    )]
    Set {
        /// The setting's name (see below).
        setting: String,
        /// Its new value.
        value: String,
    },
    /// What happened in the volume (every node's changes, with times),
    /// oldest first; --json prints this node's event journal.
    #[command(
        after_help = "Examples:\n  latus log\n  latus log --last 20\n  latus log --json --since 100\n  latus log --volume --json\n  latus log head\n  latus log checkpoint"
    )]
    Log {
        /// `head`: the log's head hash as this node read it, to compare
        /// with another node's out of band (equal at the same number: the
        /// two saw the same log). `checkpoint`: make a sealed checkpoint of
        /// the log now, so nodes joining later start from it.
        #[arg(value_parser = ["head", "checkpoint"])]
        what: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// With --json: the volume's records (every node) instead of this
        /// node's journal.
        #[arg(long)]
        volume: bool,
        /// How many of the newest records to show (not with --json).
        #[arg(long, default_value_t = 200)]
        last: usize,
        /// Only events with a journal id greater than N (the journal).
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCmd {
    /// Forget a node: it leaves the list; its files stay.
    Remove {
        /// The node's id (see `latus nodes`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Write the key file (JSON: format version, key, fingerprint, created). Keep it safe:
    /// it opens every file of the volume.
    Export {
        /// Where to write it (never overwritten).
        file: PathBuf,
    },
    /// Print the key's fingerprint (compare it between nodes).
    Fingerprint,
}

pub fn run(cli: Cli) -> Result<()> {
    let home = Home::new(cli.home.clone().unwrap_or_else(Home::default_root));
    match cli.command {
        Cmd::Init {
            cloud,
            name,
            key_file,
            cache_size,
        } => {
            let cap = cache_size
                .map(|s| {
                    crate::cache::parse_size(&s).ok_or_else(|| {
                        anyhow::anyhow!("--cache-size {s:?}: expected a size like 20G")
                    })
                })
                .transpose()?;
            init(&home, cloud, name, key_file.as_deref())?;
            if let Some(b) = cap {
                set_cache_size(&home, b)?;
            }
            Ok(())
        }
        Cmd::Pin { path } => pin(&home, &path),
        Cmd::Unpin { path } => placement(&home, &path, "auto"),
        Cmd::Free { path } => placement(&home, &path, "online-only"),
        Cmd::Cold { path } => placement(&home, &path, "cold"),
        Cmd::Thaw { path, wait } => thaw(&home, &path, wait),
        Cmd::LocalOnly { path, off } => {
            placement(&home, &path, if off { "auto" } else { "local-only" })
        }
        Cmd::Set { setting, value } => {
            let changed = crate::settings::set(&home, &setting, &value)?;
            match changed.cache_bytes {
                Some(b) => set_cache_size(&home, b),
                None => {
                    let mounted = mountpoint_of(&home).is_some();
                    println!(
                        "{} = {}{}",
                        changed.key,
                        changed.value,
                        if mounted {
                            " (takes effect at the next mount)"
                        } else {
                            ""
                        }
                    );
                    Ok(())
                }
            }
        }
        Cmd::Ui { print_url } => ui(&home, print_url),
        Cmd::Mount {
            mountpoint,
            foreground,
            offline,
            noexec,
            allow_other,
        } => mount(
            &home,
            &mountpoint,
            foreground,
            daemon::MountFlags {
                offline,
                noexec,
                allow_other,
            },
        ),
        Cmd::Unmount { mountpoint } => unmount(&home, &mountpoint),
        Cmd::Repair { json } => {
            let report = daemon::repair(&home)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                for line in report.lines() {
                    println!("repair: {line}");
                }
            }
            Ok(())
        }
        Cmd::Status { path, json } => status(&home, path.as_deref(), json),
        Cmd::Log {
            what: Some(what),
            json,
            ..
        } if what == "checkpoint" => {
            let v = history_call(&home, Request::Checkpoint, true)?;
            if json {
                println!("{v}");
            } else {
                println!(
                    "checkpoint at record {}: {} entries in {} parts ({} bytes sealed)",
                    v["mivui"], v["rows"], v["parts"], v["bytes"]
                );
            }
            Ok(())
        }
        Cmd::Log {
            what: Some(_),
            json,
            ..
        } => log_head(&home, json),
        Cmd::Log {
            json,
            volume,
            last,
            since,
            ..
        } => {
            if json && !volume {
                log(&home, since, json)
            } else {
                activity_log(&home, last, json)
            }
        }
        Cmd::Conflicts { path, keep, json } => conflicts(&home, path.as_deref(), keep, json),
        Cmd::Sync { wait, timeout } => sync(&home, wait, timeout),
        Cmd::Key { command } => key(&home, command),
        Cmd::Versions { path, json } => versions(&home, &path, json),
        Cmd::Restore {
            path,
            version,
            at,
            to,
            dry_run,
            json,
        } => restore(
            &home,
            &path,
            RestoreArgs {
                version,
                at: at.as_deref(),
                to: to.as_deref(),
                dry_run,
            },
            json,
        ),
        Cmd::Check { read_data, json } => check(&home, read_data, json),
        Cmd::Prune { dry_run, json } => {
            let v = history_call(&home, Request::Prune { dry_run }, true)?;
            if json {
                println!("{v}");
            } else {
                println!(
                    "{} {} versions and {} cloud objects ({} bytes)",
                    if dry_run { "would remove" } else { "removed" },
                    v["versions"],
                    v["objects"],
                    v["bytes"]
                );
                if let Some(n) = v["cold"]["chunks_cooled"].as_u64() {
                    println!("moved {n} chunks of old versions to the cold tier (cold-after-days)");
                }
            }
            Ok(())
        }
        Cmd::Nodes { command, json } => match command {
            Some(NodesCmd::Remove { id }) => {
                let v = history_call(&home, Request::ForgetNode { id }, true)?;
                println!(
                    "removed node {}: its files stay, what it publishes from now on is refused, \
                     and what is written from now on is sealed with a new key it does not have",
                    v["forgotten"]
                );
                for n in v["not_given_new_key"].as_array().into_iter().flatten() {
                    println!(
                        "warning: node {n} could not be given the new key (it has not published \
                         since upgrading); it must join again with a key file exported here"
                    );
                }
                Ok(())
            }
            None => {
                let v = history_call(&home, Request::Nodes, false)?;
                if json {
                    println!("{v}");
                } else {
                    let now = crate::vfs::now_nanos();
                    for n in v.as_array().into_iter().flatten() {
                        println!("{}", crate::status::node_line(n, now));
                    }
                }
                Ok(())
            }
        },
    }
}

fn ui(home: &Home, print_url: bool) -> Result<()> {
    let v = match control::call(&home.socket_path(), &Request::UiUrl, CALL_TIMEOUT) {
        Ok(v) => v,
        Err(ControlError::NotRunning { .. }) => {
            bail!(
                "the web app is served by the daemon: mount the folder first (latus mount ~/Latus)"
            )
        }
        Err(e) => return Err(e.into()),
    };
    let url = v["url"].as_str().context("the daemon gave no address")?;
    let desktop =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if print_url || !desktop {
        println!("{url}");
        if !print_url {
            eprintln!("(no desktop session: open this address in a browser on this computer)");
        }
        return Ok(());
    }
    match Command::new("xdg-open")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(_) => println!("opened the web app in your browser"),
        Err(_) => println!("{url}\n(xdg-open is missing: open this address in a browser)"),
    }
    Ok(())
}

fn set_cache_size(home: &Home, bytes: u64) -> Result<()> {
    let mut cfg = home.load_config()?;
    cfg.cache_bytes = Some(bytes);
    home.save_config(&cfg)?;
    let live = control::call(
        &home.socket_path(),
        &Request::SetCacheCap { bytes },
        CALL_TIMEOUT,
    )
    .is_ok();
    println!(
        "cache cap: {bytes} bytes{}",
        if live { " (in force now)" } else { "" }
    );
    Ok(())
}

fn placement(home: &Home, path: &Path, rule: &str) -> Result<()> {
    let rel = relative_path(path, mountpoint_of(home).as_deref())?;
    let v = history_call(
        home,
        Request::Placement {
            path: rel.clone(),
            rule: rule.to_string(),
        },
        rule == "cold",
    )?;
    let shown = if rel.is_empty() { "the folder" } else { &rel };
    match rule {
        "online-only" => println!(
            "{shown}: online-only; freed {} bytes in {} files ({} kept: not yet uploaded or open)",
            v["bytes"], v["files"], v["kept"]
        ),
        "cold" => println!(
            "{shown}: cold; {} chunks moved to the cold tier, freed {} bytes in {} files ({} kept: not yet uploaded or open, or shared with hot files)",
            v["cold"]["chunks_cooled"], v["bytes"], v["files"], v["kept"]
        ),
        _ => println!("{shown}: {rule}"),
    }
    let c = &v["cold"];
    if c["chunks_warmed"].as_u64().unwrap_or(0) > 0 {
        println!(
            "{} chunks moved back from the cold tier",
            c["chunks_warmed"]
        );
    }
    if c["chunks_thawing"].as_u64().unwrap_or(0) > 0 {
        println!(
            "{} chunks are being restored from cold storage first (ready in about {}); they move back then",
            c["chunks_thawing"],
            c["ready_in"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// Requests restores below PATH; with `wait`, polls until every chunk
/// reads, with a progress bar on a terminal.
fn thaw(home: &Home, path: &Path, wait: bool) -> Result<()> {
    use std::io::IsTerminal;
    let rel = relative_path(path, mountpoint_of(home).as_deref())?;
    let req = Request::Thaw { path: rel.clone() };
    let shown = if rel.is_empty() { "the folder" } else { &rel };
    let ask = || -> Result<serde_json::Value> {
        match control::call(&home.socket_path(), &req, Duration::from_secs(3600)) {
            Err(ControlError::NotRunning { .. }) => {
                bail!("thawing asks the cloud through the mounted folder: mount it first")
            }
            other => Ok(other?),
        }
    };
    let mut v = ask()?;
    let total = v["chunks"].as_u64().unwrap_or(0);
    let bar = if wait && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} chunks ready, {elapsed} so far",
            )
            .expect("valid template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message(format!("thawing {shown}"));
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        bar.set_position(v["ready"].as_u64().unwrap_or(0));
        if v["offline"].as_u64().unwrap_or(0) > 0 {
            bar.finish_and_clear();
            bail!(
                "{shown}: {} chunks are in a cold folder that is not connected: connect it and try again",
                v["offline"]
            );
        }
        if !wait || v["thawing"].as_u64().unwrap_or(0) == 0 {
            break;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(60));
        v = ask()?;
    }
    bar.finish_and_clear();
    let thawing = v["thawing"].as_u64().unwrap_or(0);
    if thawing == 0 {
        println!(
            "{shown}: ready; {} files ({} chunks) read now{}",
            v["files"],
            v["chunks"],
            if wait {
                format!(" (waited {:.1} s)", started.elapsed().as_secs_f64())
            } else {
                String::new()
            }
        );
    } else {
        println!(
            "{shown}: thawing; {thawing} of {} chunks are being restored, ready in about {} (latus thaw --wait waits; status PATH shows thawing or ready)",
            v["chunks"],
            v["ready_in"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// Pins PATH, then downloads everything below it that is only in the
/// cloud, with a progress bar on a terminal.
fn pin(home: &Home, path: &Path) -> Result<()> {
    use std::io::IsTerminal;
    let rel = relative_path(path, mountpoint_of(home).as_deref())?;
    let req = Request::Placement {
        path: rel.clone(),
        rule: "pinned".into(),
    };
    if let Err(ControlError::NotRunning { .. }) =
        control::call(&home.socket_path(), &req, CALL_TIMEOUT)
    {
        bail!("pinning downloads through the mounted folder: mount it first");
    }
    let list = control::call(
        &home.socket_path(),
        &Request::CloudOnly { path: rel.clone() },
        CALL_TIMEOUT,
    )?;
    let items = list.as_array().cloned().unwrap_or_default();
    let total: u64 = items.iter().filter_map(|i| i["size"].as_u64()).sum();
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .expect("valid template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut failed = Vec::new();
    for (n, item) in items.iter().enumerate() {
        bar.set_message(format!("{}/{} files", n, items.len()));
        let ino = item["ino"].as_u64().unwrap_or(0);
        if let Err(e) = control::call(
            &home.socket_path(),
            &Request::Hydrate { ino },
            Duration::from_secs(24 * 3600),
        ) {
            failed.push(format!("{}: {e}", item["path"].as_str().unwrap_or("?")));
        }
        bar.inc(item["size"].as_u64().unwrap_or(0));
    }
    bar.finish_and_clear();
    let shown = if rel.is_empty() { "the folder" } else { &rel };
    println!(
        "{shown}: pinned; downloaded {} files ({total} bytes) in {:.1} s",
        items.len() - failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!(
            "{} files could not be downloaded now (they will be when the cloud answers):\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

/// Asks the daemon, or (not mounted) answers from this process, with the
/// cloud connected when `cloud` says it is needed.
fn history_call(home: &Home, req: Request, cloud: bool) -> Result<serde_json::Value> {
    match control::call(&home.socket_path(), &req, Duration::from_secs(3600)) {
        Err(ControlError::NotRunning { .. }) => {}
        other => return Ok(other?),
    }
    // A home this build cannot read is refused before anything is made in it.
    home.load_config()?;
    let (_lock, node) = daemon::open_node_locked(home)?;
    let uploader = if cloud {
        let volume = daemon::open_volume(&node)?;
        Some(daemon::start_uploader(&node, volume))
    } else {
        None
    };
    let resp = daemon::answer_history(&node.vfs, uploader.as_ref(), &node.config, req);
    if let Some(u) = &uploader {
        u.stop();
    }
    node.vfs.shutdown()?;
    match resp.error {
        Some(e) if !resp.ok => bail!("{e}"),
        _ => Ok(resp.data),
    }
}

fn check(home: &Home, read_data: bool, json: bool) -> Result<()> {
    let v = history_call(home, Request::Check { read_data }, true)?;
    let report: crate::sync::CheckReport = serde_json::from_value(v.clone())?;
    if json {
        println!("{v}");
    } else {
        println!(
            "log: {} records, {} unreadable, {} refused; {}",
            report.records,
            report.unreadable_records,
            report.refused_records,
            match (&report.log_breach, report.head_differs) {
                (Some(b), _) => format!("BROKEN: {b}"),
                (None, true) => "BROKEN: its head differs from what this node read".into(),
                (None, false) => "chains and head verify".into(),
            }
        );
        println!(
            "content: {} versions, {} chunks needed, {} missing{}",
            report.versions,
            report.chunks_needed,
            report.chunks_missing,
            if report.read_data {
                format!(
                    ", {} read ({} bytes), {} damaged",
                    report.chunks_read, report.bytes_read, report.chunks_damaged
                )
            } else {
                String::new()
            }
        );
        for n in &report.missing {
            println!("  missing: {n}");
        }
        for n in &report.damaged {
            println!("  damaged: {n}");
        }
        println!("orphans (objects nothing needs): {}", report.orphans);
    }
    if !report.ok() {
        bail!("the check found problems");
    }
    Ok(())
}

fn mountpoint_of(home: &Home) -> Option<PathBuf> {
    control::call(&home.socket_path(), &Request::Status, CALL_TIMEOUT)
        .ok()
        .and_then(|v| v["mountpoint"].as_str().map(PathBuf::from))
}

fn versions(home: &Home, path: &Path, json: bool) -> Result<()> {
    let rel = relative_path(path, mountpoint_of(home).as_deref())?;
    let v = history_call(home, Request::Versions { path: rel.clone() }, false)?;
    if json {
        println!("{v}");
        return Ok(());
    }
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("{rel}: no versions in history");
    }
    for e in list {
        println!(
            "{:>8}  {:<7} {}  {:<16} {:>12} bytes  {}",
            e["mivui"],
            e["event_type"].as_str().unwrap_or("?"),
            format_time(e["time"].as_i64().unwrap_or(0)),
            e["node"].as_str().unwrap_or("?"),
            e["size"],
            e["hash"].as_str().map_or("-", |h| &h[..h.len().min(16)])
        );
    }
    Ok(())
}

struct RestoreArgs<'a> {
    version: Option<u64>,
    at: Option<&'a str>,
    to: Option<&'a Path>,
    dry_run: bool,
}

fn restore(home: &Home, path: &Path, args: RestoreArgs, json: bool) -> Result<()> {
    let mp = mountpoint_of(home);
    let rel = relative_path(path, mp.as_deref())?;
    let to = args
        .to
        .map(|t| relative_path(t, mp.as_deref()))
        .transpose()?;
    let at = args
        .at
        .map(|s| crate::when::parse_time(s, crate::vfs::now_nanos()))
        .transpose()
        .context("--at")?;
    let v = history_call(
        home,
        Request::Restore {
            path: rel.clone(),
            version: args.version,
            at,
            to,
            dry_run: args.dry_run,
        },
        false,
    )?;
    if json {
        println!("{v}");
        return Ok(());
    }
    let shown = v["path"].as_str().unwrap_or(&rel);
    let when = at.map(|t| format!(" as it was at {}", crate::when::local(t)));
    println!(
        "{} {shown}{}: {} files restored, {} folders made, {} removed (they stay in history), {} already as they were",
        if args.dry_run {
            "would restore"
        } else {
            "restored"
        },
        when.unwrap_or_default(),
        v["files_restored"],
        v["folders_made"],
        v["removed"],
        v["unchanged"]
    );
    for c in v["changes"].as_array().into_iter().flatten() {
        println!(
            "  {:<8} {}",
            c["action"].as_str().unwrap_or("?"),
            c["path"].as_str().unwrap_or("?")
        );
    }
    if v["changes_truncated"] == true {
        println!("  ... (more changes not listed)");
    }
    let c = &v["cold"];
    if c.is_object() {
        println!(
            "the version was in cold storage: {} chunks moved back to the hot tier{}",
            c["chunks_warmed"],
            match c["chunks_thawing"].as_u64().unwrap_or(0) {
                0 => String::new(),
                n => format!(
                    "; {n} are being restored first (ready in about {}; reads fail with EAGAIN until then)",
                    c["ready_in"].as_str().unwrap_or("?")
                ),
            }
        );
    }
    Ok(())
}

fn format_time(ns: i64) -> String {
    let (y, mo, d, h, mi, s) = crate::sync::utc_fields(ns.div_euclid(1_000_000_000));
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn init(
    home: &Home,
    cloud: Option<String>,
    name: Option<String>,
    key_file: Option<&Path>,
) -> Result<()> {
    init_node(home, cloud, name, key_file)
}

/// Creates the node and joins (or creates) its volume. A volume that
/// refuses the key undoes the node: nothing half-made is left behind.
fn init_node(
    home: &Home,
    cloud: Option<String>,
    name: Option<String>,
    key_file: Option<&Path>,
) -> Result<()> {
    // A `dir:` cloud is stored absolute: a mount from another folder must
    // find the same one.
    let cloud = match cloud {
        Some(url) if url.starts_with("dir:") && !Path::new(&url[4..]).is_absolute() => {
            Some(format!("dir:{}", absolute(Path::new(&url[4..]))?.display()))
        }
        other => other,
    };
    if let Some(url) = &cloud {
        crate::cloud::CloudUrl::parse(url)?;
    }
    if let Some(k) = key_file
        && let Err(e) = std::fs::File::open(k)
    {
        bail!(
            "the key file {} cannot be read ({e}); export it on a node of the volume with `latus key export FILE` and copy it here",
            k.display()
        );
    }
    if home.is_initialised() {
        bail!(
            "{} is already initialised as a node ({}); to join another volume instead, unmount it, move that folder away and run init again (or give another home: --home DIR)",
            home.root().display(),
            home.load_config()
                .map(|c| format!("{}, cloud {}", c.node_name, c.cloud))
                .unwrap_or_default()
        );
    }
    // Two nodes on one machine would both be called after the host: a
    // node whose home is not the default one is named after it too.
    let name = name.or_else(|| {
        let default = Home::default_root();
        (home.root() != default.as_path())
            .then(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
                let dir = home.root().file_name()?.to_str()?.to_string();
                Some(format!("{}-{dir}", host.trim()))
            })
            .flatten()
    });
    // A key file joins a volume that exists: never a new volume under the
    // same key (a missing or mistyped cloud would make one).
    let joining = key_file.is_some();
    if joining && cloud.is_none() {
        bail!(
            "--key-file joins an existing volume: name its cloud with --cloud URL (the first node's `latus status` shows it)"
        );
    }
    let existed = home.root().exists();
    let cfg = home.init(name, cloud, key_file)?;
    let key = crate::home::load_key(home)?;
    match Volume::open(&cfg.cloud, &key, !joining) {
        Ok((volume, created)) => {
            println!(
                "initialised node {} ({}) in {}",
                cfg.node_name,
                cfg.node_id,
                home.root().display()
            );
            for line in created {
                println!("{line}");
            }
            println!("cloud: {} (volume {})", cfg.cloud, volume.id);
            println!("key fingerprint: {}", volume.keys.fingerprint());
            Ok(())
        }
        Err(e) => {
            // Both were made by this init (it refuses a home that has either).
            let undo = if existed {
                std::fs::remove_file(home.config_path()).and(std::fs::remove_file(home.key_path()))
            } else {
                std::fs::remove_dir_all(home.root())
            };
            if let Err(u) = undo {
                eprintln!(
                    "latus: could not undo the partial init in {}: {u}",
                    home.root().display()
                );
            }
            Err(e).context("the node was not created")
        }
    }
}

fn key(home: &Home, cmd: KeyCmd) -> Result<()> {
    let cfg = home.load_config()?;
    let key = crate::home::load_key(home)?;
    match cmd {
        KeyCmd::Fingerprint => {
            println!("{}", crate::crypto::Keys::derive(&key).fingerprint());
        }
        KeyCmd::Export { file } => {
            let mut kf = crate::crypto::KeyFile::new(&key, cfg.created);
            // Later key epochs too: a node joining with this file reads
            // what was sealed after a removal.
            kf.epochs = crate::sync::read_epochs(&home.epochs_path())?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .with_context(|| {
                    format!(
                        "create {} (an existing file is never overwritten)",
                        file.display()
                    )
                })?;
            f.write_all(&serde_json::to_vec_pretty(&kf)?)?;
            f.sync_all()?;
            println!(
                "wrote the volume key to {} (fingerprint {}); anyone with this file can read the volume",
                file.display(),
                kf.fingerprint
            );
        }
    }
    Ok(())
}

fn sync(home: &Home, wait: bool, timeout: u64) -> Result<()> {
    let req = Request::SyncWait {
        timeout_secs: if wait { timeout } else { 0 },
    };
    let call_timeout = Duration::from_secs(timeout + 30);
    let status = match control::call(&home.socket_path(), &req, call_timeout) {
        Ok(v) => v,
        Err(ControlError::NotRunning { .. }) => {
            // Not mounted: publish from this process.
            let (_lock, node) = daemon::open_node_locked(home)?;
            let volume = daemon::open_volume(&node)?;
            let uploader = daemon::start_uploader(&node, volume);
            let result = uploader.wait_idle(Duration::from_secs(if wait { timeout } else { 0 }));
            uploader.stop();
            node.vfs.shutdown()?;
            match result {
                Ok(st) => serde_json::to_value(st)?,
                Err(e) if !wait => {
                    serde_json::json!({ "published_events": 0, "log_seen": 0, "note": e.to_string() })
                }
                Err(e) => bail!("sync incomplete: {e}"),
            }
        }
        Err(ControlError::Daemon(e)) if !wait => {
            serde_json::json!({ "published_events": 0, "log_seen": 0, "note": e })
        }
        Err(e) => return Err(e.into()),
    };
    if wait {
        println!(
            "in sync: {} events published, log read up to {}",
            status["published_events"], status["log_seen"]
        );
    } else {
        println!("sync started in the background");
    }
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("bad path {}", p.display()))
}

fn mount(
    home: &Home,
    mountpoint: &Path,
    foreground: bool,
    flags: daemon::MountFlags,
) -> Result<()> {
    let mountpoint = absolute(mountpoint)?;
    if !home.is_initialised() {
        init_node(home, None, None, None)?;
        println!(
            "this is a new volume. To join an existing one instead: latus unmount {m}, move {h} away, then latus init --cloud URL --key-file KEY and mount again",
            m = mountpoint.display(),
            h = home.root().display()
        );
    }
    home.load_config()?; // a newer home is refused here, before the daemon starts
    if let Ok(v) = control::call(
        &home.socket_path(),
        &Request::Status,
        Duration::from_secs(5),
    ) {
        bail!(
            "this node is already mounted at {} (daemon pid {})",
            v["mountpoint"].as_str().unwrap_or("?"),
            v["pid"]
        );
    }
    daemon::check_fuse_available()?;
    let state = daemon::check_mountpoint(&mountpoint)?;
    if foreground {
        crate::cli::init_tracing_once();
        return Ok(daemon::run_foreground(home, &mountpoint, flags)?);
    }
    if state == MountpointState::Stale {
        println!(
            "recovered: found a stale mount at {} (its daemon had stopped); cleaning it",
            mountpoint.display()
        );
    }
    spawn_daemon(home, &mountpoint, flags)
}

/// Starts `latus mount --foreground` detached and waits until it answers.
fn spawn_daemon(home: &Home, mountpoint: &Path, flags: daemon::MountFlags) -> Result<()> {
    let log_path = home.log_path();
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let log_start = log.seek(SeekFrom::End(0))?;
    let exe = std::env::current_exe().context("locate the latus binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--home")
        .arg(home.root())
        .arg("mount")
        .arg(mountpoint)
        .arg("--foreground")
        .args(flags.offline.then_some("--offline"))
        .args(flags.noexec.then_some("--noexec"))
        .args(flags.allow_other.then_some("--allow-other"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from our
    // terminal and process group so it outlives this command.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("start the daemon")?;
    writeln!(log).ok();
    let started = Instant::now();
    let deadline = started + MOUNT_TIMEOUT;
    let mut told = false;
    loop {
        if !told && started.elapsed() > Duration::from_secs(10) {
            eprintln!("latus: still opening the node (a large volume takes a while to read)...");
            told = true;
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the daemon stopped ({status}) before mounting:\n{}",
                log_since(&log_path, log_start)
            );
        }
        if let Ok(v) = control::call(
            &home.socket_path(),
            &Request::Status,
            Duration::from_secs(5),
        ) {
            println!("mounted {} (daemon pid {})", mountpoint.display(), v["pid"]);
            print_recovery(&v["recovered"]);
            if !flags.offline {
                warn_if_unreachable(home);
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon did not answer within {}s; see {}",
                MOUNT_TIMEOUT.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits briefly for the daemon's first contact with the cloud, and says
/// so when it does not answer (the folder works; changes wait).
fn warn_if_unreachable(home: &Home) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let Ok(v) = control::call(&home.socket_path(), &Request::Status, CALL_TIMEOUT) else {
            return;
        };
        match v["queue"]["cloud_reachable"].as_bool() {
            Some(true) => return,
            Some(false) => {
                eprintln!(
                    "warning: the cloud {} does not answer ({}); the folder works and changes wait until it does (`latus status` says when)",
                    v["cloud"].as_str().unwrap_or("?"),
                    v["queue"]["last_error"].as_str().unwrap_or("no answer")
                );
                return;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn print_recovery(r: &serde_json::Value) {
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    if n("replayed_records") > 0 && r["database_rebuilt"].is_null() {
        println!(
            "recovered: replayed {} journal records the previous daemon had not committed",
            n("replayed_records")
        );
    }
    if n("torn_journal_bytes") > 0 {
        println!(
            "recovered: dropped a torn journal tail of {} bytes",
            n("torn_journal_bytes")
        );
    }
    if n("discarded_unclosed_versions") > 0 {
        println!(
            "recovered: discarded {} unfinished versions (written but never closed); those files show their last closed version",
            n("discarded_unclosed_versions")
        );
    }
    if let Some(rb) = r["database_rebuilt"].as_object() {
        println!(
            "recovered: the database was damaged ({}); {} and rebuilt it from {}",
            rb["error"].as_str().unwrap_or("?"),
            match rb["damaged_file"].as_str().unwrap_or("") {
                "" => "there was none to keep".to_string(),
                f => format!("kept it as {f}"),
            },
            if rb["journal_complete"] == true {
                "the journal (every change of this node, unpublished ones included) and the volume's log"
            } else {
                "the volume's log (published versions only)"
            }
        );
        if n("unplaced_objects") > 0 {
            println!(
                "recovered: {} local contents could not be put back at a path (versions not yet in the cloud, and copies of published ones); they are kept in {}",
                n("unplaced_objects"),
                r["unplaced_folder"].as_str().unwrap_or("?")
            );
        } else if rb["journal_complete"] == true {
            println!("recovered: nothing unpublished was lost");
        }
    }
    let plain = &r["plain_folder"];
    let adopted = plain["adopted"].as_u64().unwrap_or(0);
    if adopted > 0 {
        println!(
            "recovered: adopted {adopted} entries written into the plain folder while latus was not mounted ({} kept under a new name: \"NAME (adopted)\")",
            plain["renamed"].as_u64().unwrap_or(0)
        );
    }
    if plain["left"].as_u64().unwrap_or(0) > 0 {
        println!(
            "recovered: {} entries could not be adopted and stay in the plain folder (see the daemon log)",
            plain["left"]
        );
    }
    if n("announced_files") > 0 {
        println!(
            "recovered: journaled {} files created but never closed",
            n("announced_files")
        );
    }
}

fn log_since(path: &Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn unmount(home: &Home, mountpoint: &Path) -> Result<()> {
    let mountpoint = absolute(mountpoint)?;
    let status = match control::call(&home.socket_path(), &Request::Status, CALL_TIMEOUT) {
        Ok(v) => v,
        Err(ControlError::NotRunning { .. }) => {
            if daemon::is_mounted(&mountpoint) {
                daemon::clean_stale_mount(&mountpoint)?;
                println!(
                    "cleaned a stale mount at {} (no daemon was serving it)",
                    mountpoint.display()
                );
                return Ok(());
            }
            bail!(
                "{} is not mounted by this node (home {})",
                mountpoint.display(),
                home.root().display()
            );
        }
        Err(e) => return Err(e.into()),
    };
    let served = status["mountpoint"].as_str().unwrap_or_default();
    if Path::new(served) != mountpoint {
        bail!(
            "this node is mounted at {served}, not at {}",
            mountpoint.display()
        );
    }
    let pid = status["pid"]
        .as_u64()
        .context("daemon status without pid")? as u32;
    control::call(&home.socket_path(), &Request::Unmount, CALL_TIMEOUT)?;
    let deadline = Instant::now() + UNMOUNT_TIMEOUT;
    let mut told = false;
    // The main thread can be gone while others still hold the database:
    // done means the process is gone and its home lock is free.
    while process_alive(pid) || !daemon::home_lock_free(home) {
        if Instant::now() > deadline {
            bail!(
                "the daemon (pid {pid}) is still flushing after {}s; see {}",
                UNMOUNT_TIMEOUT.as_secs(),
                home.log_path().display()
            );
        }
        if !told && Instant::now() + UNMOUNT_TIMEOUT - deadline > Duration::from_secs(5) {
            eprintln!(
                "waiting for files still open under {} to be closed...",
                mountpoint.display()
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("unmounted {}", mountpoint.display());
    Ok(())
}

/// Alive and not a zombie (a daemon whose parent is gone may linger unreaped).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn status(home: &Home, path: Option<&Path>, json: bool) -> Result<()> {
    let daemon = control::call(&home.socket_path(), &Request::Status, CALL_TIMEOUT).ok();
    let now = crate::vfs::now_nanos();
    match path {
        None => {
            let v = match daemon {
                Some(v) => v,
                None => offline_status(home)?,
            };
            if json {
                println!("{v}");
            } else {
                let nodes = history_call(home, Request::Nodes, false).ok();
                for line in crate::status::lines(&v, nodes.as_ref(), now) {
                    println!("{line}");
                }
            }
        }
        Some(p) => {
            let mountpoint = daemon
                .as_ref()
                .and_then(|v| v["mountpoint"].as_str().map(PathBuf::from));
            let rel = relative_path(p, mountpoint.as_deref())?;
            let v = match daemon {
                Some(_) => control::call(
                    &home.socket_path(),
                    &Request::PathStatus { path: rel.clone() },
                    CALL_TIMEOUT,
                )?,
                None => {
                    let (_lock, node) = daemon::open_node_locked(home)?;
                    let s = node.vfs.path_status(&rel);
                    node.vfs.shutdown()?;
                    let s = s.map_err(|e| anyhow::anyhow!("{rel}: {e}"))?;
                    serde_json::to_value(s)?
                }
            };
            if json {
                println!("{v}");
            } else {
                let nodes = history_call(home, Request::Nodes, false).ok();
                let me = home.load_config()?.node_id.to_string();
                for line in crate::status::path_lines(&v, nodes.as_ref(), &me) {
                    println!("{line}");
                }
            }
        }
    }
    Ok(())
}

fn conflicts(home: &Home, path: Option<&Path>, keep: Option<String>, json: bool) -> Result<()> {
    let Some(keep) = keep else {
        if path.is_some() {
            bail!("say which version keeps the name: --keep mine, --keep theirs or --keep both");
        }
        let v = history_call(home, Request::Conflicts, false)?;
        if json {
            println!("{v}");
            return Ok(());
        }
        let list = v.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            println!("no conflicts");
        }
        for c in &list {
            println!(
                "{}\n    {} version from {} ({} UTC), beside {}{}",
                c["path"].as_str().unwrap_or("?"),
                if c["mine"] == true {
                    "this node's"
                } else {
                    "the other node's"
                },
                c["node"].as_str().unwrap_or("?"),
                c["when"].as_str().unwrap_or("?"),
                c["original"].as_str().unwrap_or("?"),
                if c["original_exists"] == true {
                    ""
                } else {
                    " (now gone)"
                }
            );
        }
        if !list.is_empty() {
            println!(
                "resolve one with: latus conflicts PATH --keep mine|theirs|both (the other version stays in history)"
            );
        }
        return Ok(());
    };
    let path = path.context("name the conflict copy to resolve")?;
    let rel = relative_path(path, mountpoint_of(home).as_deref())?;
    let v = history_call(
        home,
        Request::ResolveConflict {
            path: rel,
            keep: keep.clone(),
        },
        false,
    )?;
    if json {
        println!("{v}");
        return Ok(());
    }
    let shown = v["path"].as_str().unwrap_or("?");
    match (v["moved_to"].as_str(), v["removed"].as_str()) {
        (Some(to), _) => println!("kept both: {shown}, and the other version as {to}"),
        (None, Some(r)) if r != shown => {
            println!("{shown}: kept {keep} version; removed {r} (it stays in history)")
        }
        _ => {
            println!("{shown}: now holds the {keep} version (the one it replaced stays in history)")
        }
    }
    Ok(())
}

fn activity_log(home: &Home, last: usize, json: bool) -> Result<()> {
    let v = history_call(home, Request::Activity { limit: last }, false)?;
    let items: Vec<crate::status::Activity> = serde_json::from_value(v)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for a in &items {
        if json {
            serde_json::to_writer(&mut out, a)?;
            writeln!(out)?;
            continue;
        }
        let what = match &a.src_path {
            Some(src) => format!("{src} -> {}", a.path),
            None => a.path.clone(),
        };
        let size = if a.event_type.carries_content() {
            format!(" ({})", crate::when::bytes(a.size))
        } else {
            String::new()
        };
        writeln!(
            out,
            "{}  {:<12} {:<8} {what}{size}{}",
            crate::when::local(a.time),
            a.node,
            format!("{:?}", a.event_type).to_lowercase(),
            if a.mivui.is_none() {
                "  (waiting to upload)"
            } else {
                ""
            }
        )?;
    }
    if items.is_empty() && !json {
        writeln!(out, "nothing has happened in the volume yet")?;
    }
    out.flush()?;
    Ok(())
}

/// A path given on the command line, as a path relative to the latus folder.
fn relative_path(p: &Path, mountpoint: Option<&Path>) -> Result<String> {
    let abs = if p.is_absolute() {
        Some(p.to_path_buf())
    } else {
        let cwd = std::env::current_dir().ok();
        match (mountpoint, cwd) {
            (Some(m), Some(c)) if c.starts_with(m) => Some(c.join(p)),
            // From outside: a path that leads into the folder (`latus
            // free Latus/photos` from the home folder) is taken as such.
            (Some(m), Some(c)) => std::path::absolute(c.join(p))
                .ok()
                .filter(|a| a.starts_with(m)),
            _ => None,
        }
    };
    let rel = match (abs, mountpoint) {
        (Some(a), Some(m)) => match a.strip_prefix(m) {
            Ok(r) => r.to_path_buf(),
            Err(_) => bail!(
                "{} is not inside the latus folder {} (give a path in it, or one relative to it)",
                p.display(),
                m.display()
            ),
        },
        (Some(a), None) => bail!(
            "{} is absolute but the latus folder is not mounted; give a path relative to the folder",
            a.display()
        ),
        (None, _) => p.to_path_buf(),
    };
    let s = rel.to_str().context("path is not valid UTF-8")?;
    Ok(s.trim_start_matches("./").trim_end_matches('/').to_string())
}

fn offline_status(home: &Home) -> Result<serde_json::Value> {
    let cfg = home.load_config()?;
    let (_lock, node) = daemon::open_node_locked(home)?;
    let counts = node.vfs.counts();
    let after = node.meta.state(crate::meta::PUBLISHED_THROUGH)?;
    let pending = node.meta.unpublished_events(after, usize::MAX)?;
    let waiting = node.vfs.waiting();
    let conflict_copies = crate::conflicts::list(&node.vfs, &cfg.node_name);
    node.vfs.shutdown()?;
    // The per-path rule, as a running daemon counts.
    let queue = serde_json::json!({
        "pending_events": pending.len(),
        "pending_files": waiting.files,
        "pending_bytes": waiting.bytes,
    });
    // A folder still mounted with no daemon behind it (kill -9, a crash).
    let stale_mount = std::fs::read(daemon::mountpoint_file(home))
        .ok()
        .map(|b| PathBuf::from(String::from_utf8_lossy(&b).into_owned()))
        .filter(|m| daemon::is_mounted(m))
        .map(|m| m.display().to_string());
    let mut v = serde_json::json!({
        "pid": null,
        "mountpoint": null,
        "stale_mount": stale_mount,
        "node_id": cfg.node_id.to_string(),
        "node_name": cfg.node_name,
        "cloud": cfg.cloud,
        "queue": queue,
        "waiting": waiting,
        "conflict_copies": conflict_copies,
    });
    if let (Some(obj), serde_json::Value::Object(c)) =
        (v.as_object_mut(), serde_json::to_value(counts)?)
    {
        obj.extend(c);
    }
    let summary = crate::status::summary(&v, crate::vfs::now_nanos());
    v["summary"] = serde_json::to_value(summary)?;
    Ok(v)
}

fn log_head(home: &Home, json: bool) -> Result<()> {
    let head: crate::sync::LogHead =
        match control::call(&home.socket_path(), &Request::LogHead, CALL_TIMEOUT) {
            Ok(v) => serde_json::from_value(v)?,
            Err(_) => {
                home.load_config()?;
                let store = std::sync::Arc::new(ContentStore::open(home.objects_dir())?);
                let _lock = daemon::lock_home(home)?;
                let meta = Meta::open(&home.db_path(), &home.wal_path(), store)?.0;
                crate::sync::log_head(&meta)?
            }
        };
    if json {
        println!("{}", serde_json::to_string(&head)?);
    } else {
        println!("{} at {}", head.head, head.mivui);
    }
    Ok(())
}

fn log(home: &Home, since: u64, json: bool) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut since = since;
    let offline = match control::call(&home.socket_path(), &Request::Status, CALL_TIMEOUT) {
        Ok(_) => None,
        Err(_) => {
            home.load_config()?;
            let store = std::sync::Arc::new(ContentStore::open(home.objects_dir())?);
            let lock = daemon::lock_home(home)?;
            Some((
                lock,
                Meta::open(&home.db_path(), &home.wal_path(), store)?.0,
            ))
        }
    };
    loop {
        let page: Vec<Event> = match &offline {
            Some((_, meta)) => meta.events_since(since, LOG_PAGE)?,
            None => serde_json::from_value(control::call(
                &home.socket_path(),
                &Request::Log {
                    since,
                    limit: LOG_PAGE,
                },
                CALL_TIMEOUT,
            )?)?,
        };
        for ev in &page {
            if json {
                serde_json::to_writer(&mut out, ev)?;
                writeln!(out)?;
            } else {
                let what = match &ev.src_path {
                    Some(src) => format!("{src} -> {}", ev.file_path),
                    None => ev.file_path.clone(),
                };
                writeln!(
                    out,
                    "{:>6} {:<8} {} ({} bytes)",
                    ev.id,
                    format!("{:?}", ev.event_type).to_lowercase(),
                    what,
                    ev.size
                )?;
            }
        }
        match page.last() {
            Some(last) if page.len() == LOG_PAGE => since = last.id,
            _ => break,
        }
    }
    out.flush()?;
    Ok(())
}

static TRACING: std::sync::Once = std::sync::Once::new();

pub fn init_tracing_once() {
    TRACING.call_once(init_tracing);
}
