//! latus: a personal cloud storage client whose folder is a mounted filesystem.
//!
//! Layers, top to bottom (arrows point down only):
//! `cli` → `control` → `daemon` → `fuse` (thin adapter) → `vfs` (POSIX core,
//! emits events) → `meta` (redb + write-ahead journal) and `store` (local
//! content objects).

pub mod cache;
pub mod cli;
pub mod clock;
pub mod cloud;
pub mod conflicts;
pub mod control;
pub mod crypto;
pub mod daemon;
pub mod event;
pub mod formats;
pub mod fuse;
pub mod home;
pub mod hydration;
pub mod ignore;
pub mod locks;
pub mod log_budget;
pub mod meta;
pub mod notify;
pub mod platform;
pub mod settings;
pub mod status;
pub mod store;
pub mod sync;
pub mod vfs;
pub mod web;
pub mod when;
