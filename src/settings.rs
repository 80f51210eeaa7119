//! `latus set` and the web app's settings page: every setting in the
//! home's `config.json`, by name, checked by loading the result as a
//! `Config` before it is saved. The daemon applies what it can live (the
//! cache cap); the rest takes effect at the next mount.

use serde_json::Value;
use thiserror::Error;

use crate::home::{Config, Home, HomeError};

#[derive(Debug, Error)]
pub enum SettingError {
    #[error("unknown setting {0:?}; known: {known}", known = KNOWN.join(", "))]
    Unknown(String),
    #[error("{key} {value:?}: {why}")]
    Bad {
        key: String,
        value: String,
        why: String,
    },
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// Settings by name (`-` and `_` are the same).
pub const KNOWN: &[&str] = &[
    "cache-size",
    "poll-ms",
    "keep-versions",
    "keep-days",
    "cold-after-days",
    "cold-class",
    "restore-tier",
    "restore-days",
    "cold-dir",
    "conflict-policy",
    "checkpoint-every",
    "hydration",
    "hydration-default",
    "ignore",
    "name",
];

/// The current value of every setting, as shown to people.
pub fn current(cfg: &Config) -> Vec<(&'static str, String)> {
    vec![
        (
            "cache-size",
            cfg.cache_bytes
                .map_or("a tenth of the disk (default)".into(), |b| b.to_string()),
        ),
        ("poll-ms", cfg.poll_ms.to_string()),
        (
            "keep-versions",
            cfg.retention
                .keep_versions
                .map_or("all".into(), |n| n.to_string()),
        ),
        (
            "keep-days",
            cfg.retention
                .keep_days
                .map_or("forever".into(), |n| n.to_string()),
        ),
        (
            "cold-after-days",
            cfg.retention
                .cold_after_days
                .map_or("never".into(), |n| n.to_string()),
        ),
        ("cold-class", cfg.cold.class().as_str().to_string()),
        ("restore-tier", cfg.cold.tier().as_str().to_string()),
        ("restore-days", cfg.cold.days().to_string()),
        (
            "cold-dir",
            cfg.cold
                .cold_dir
                .as_ref()
                .map_or("none".into(), |d| d.display().to_string()),
        ),
        (
            "conflict-policy",
            serde_json::to_value(cfg.conflict_policy)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        ),
        (
            "hydration",
            serde_json::to_string(&cfg.hydration.programs).unwrap_or_default(),
        ),
        (
            "hydration-default",
            serde_json::to_value(cfg.hydration.default)
                .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
                .unwrap_or_default(),
        ),
        (
            "ignore",
            serde_json::to_value(&cfg.ignore)
                .ok()
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "checkpoint-every",
            match cfg.checkpoint_every {
                0 => "never".into(),
                n => format!("{n} records"),
            },
        ),
        ("name", cfg.node_name.clone()),
    ]
}

/// What a change did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Changed {
    pub key: String,
    pub value: String,
    /// The cache cap in bytes, when that changed (the daemon applies it now).
    pub cache_bytes: Option<u64>,
}

/// Sets `key` to `value` in `config.json`. `hydration` takes
/// `PROGRAM=ACTION` (`download`, `refuse`, `range:SIZE`, or `default` to
/// drop the program's rule); `ignore` a comma-separated list of patterns.
pub fn set(home: &Home, key: &str, value: &str) -> Result<Changed, SettingError> {
    let key = key.replace('_', "-");
    let bad = |why: &str| SettingError::Bad {
        key: key.clone(),
        value: value.to_string(),
        why: why.to_string(),
    };
    let cfg = home.load_config()?;
    let mut v = serde_json::to_value(&cfg).expect("config serialises");
    let mut cache_bytes = None;
    let value = value.trim();
    match key.as_str() {
        "cache-size" | "cache-bytes" => {
            let b = crate::cache::parse_size(value)
                .ok_or_else(|| bad("expected a size like 20G, 500M or a number of bytes"))?;
            v["cache_bytes"] = b.into();
            cache_bytes = Some(b);
        }
        "poll-ms" | "poll" => {
            let ms: u64 = value
                .parse()
                .map_err(|_| bad("expected milliseconds, e.g. 3000"))?;
            if !(100..=3_600_000).contains(&ms) {
                return Err(bad("between 100 and 3600000 milliseconds"));
            }
            v["poll_ms"] = ms.into();
        }
        "checkpoint-every" => {
            let n: u64 = if value == "never" {
                0
            } else {
                value
                    .parse()
                    .map_err(|_| bad("expected a number of log records, or `never`"))?
            };
            if n != 0 && n < 100 {
                return Err(bad("at least 100 records (or `never`)"));
            }
            v["checkpoint_every"] = n.into();
        }
        "keep-versions" | "keep-days" => {
            let field = key.replace('-', "_");
            v["retention"][&field] = if value == "all" || value == "forever" || value.is_empty() {
                Value::Null
            } else {
                let n: u32 = value
                    .parse()
                    .map_err(|_| bad("expected a number, or `all`"))?;
                if n == 0 {
                    return Err(bad("0 would remove every old version; use at least 1"));
                }
                n.into()
            };
        }
        "cold-after-days" => {
            v["retention"]["cold_after_days"] = if value == "never" || value.is_empty() {
                Value::Null
            } else {
                value
                    .parse::<u32>()
                    .map_err(|_| bad("expected a number of days, or `never`"))?
                    .into()
            };
        }
        "cold-class" => {
            let class = crate::cloud::ColdClass::parse(value)
                .ok_or_else(|| bad("expected GLACIER_IR, GLACIER or DEEP_ARCHIVE"))?;
            v["cold_class"] = class.as_str().into();
        }
        "restore-tier" => {
            let tier = crate::cloud::RestoreTier::parse(value)
                .ok_or_else(|| bad("expected Expedited, Standard or Bulk"))?;
            v["restore_tier"] = tier.as_str().into();
        }
        "restore-days" => {
            let n: u32 = value
                .parse()
                .map_err(|_| bad("expected a number of days"))?;
            if n == 0 {
                return Err(bad("a restored copy stays readable at least 1 day"));
            }
            v["restore_days"] = n.into();
        }
        "cold-dir" => {
            v["cold_dir"] = if value == "none" || value.is_empty() {
                Value::Null
            } else if !std::path::Path::new(value).is_absolute() {
                return Err(bad(
                    "an absolute path (a folder on the disk that holds the cold tier)",
                ));
            } else {
                value.into()
            };
        }
        "conflict-policy" => {
            if value != "newest" && value != "first" {
                return Err(bad("expected newest or first"));
            }
            v["conflict_policy"] = value.into();
        }
        "hydration-default" => v["hydration"]["default"] = action(value).map_err(|w| bad(&w))?,
        "hydration" => {
            let (prog, act) = value
                .split_once('=')
                .ok_or_else(|| bad("expected PROGRAM=ACTION, e.g. baloo_file=refuse"))?;
            let prog = prog.trim();
            if prog.is_empty() || prog.len() > 15 {
                return Err(bad(
                    "a program name as the kernel knows it (at most 15 bytes)",
                ));
            }
            let programs = v["hydration"]["programs"]
                .as_object_mut()
                .ok_or_else(|| bad("the hydration setting in config.json is not an object"))?;
            if act.trim() == "default" {
                programs.remove(prog);
            } else {
                programs.insert(prog.to_string(), action(act.trim()).map_err(|w| bad(&w))?);
            }
        }
        "ignore" => {
            let list: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            crate::ignore::IgnoreRules::new(&list).map_err(|e| bad(&e.to_string()))?;
            v["ignore"] = list.into();
        }
        "name" | "node-name" => {
            if value.is_empty() {
                return Err(bad("a node needs a name"));
            }
            v["node_name"] = value.into();
        }
        _ => return Err(SettingError::Unknown(key)),
    }
    let new: Config = serde_json::from_value(v).map_err(|e| bad(&e.to_string()))?;
    home.save_config(&new)?;
    Ok(Changed {
        key,
        value: value.to_string(),
        cache_bytes,
    })
}

fn action(s: &str) -> Result<Value, String> {
    let v: Value = s.into();
    serde_json::from_value::<crate::hydration::Action>(v.clone())
        .map(|_| v)
        .map_err(|_| "expected download, refuse or range:SIZE (e.g. range:4M)".to_string())
}
