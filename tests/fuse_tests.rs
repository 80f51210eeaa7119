//! Kernel-mount integration tests: each test mounts its own latus node with
//! the real `latus` binary and drives it through ordinary system calls and
//! programs. They need /dev/fuse and fusermount3.
//!
//! One test binary (this crate root plus submodules) keeps builds cheap.

#[path = "fuse_tests/harness.rs"]
mod harness;

#[path = "fuse_tests/adversity.rs"]
mod adversity;
#[path = "fuse_tests/browser.rs"]
mod browser;
#[path = "fuse_tests/cli.rs"]
mod cli;
#[path = "fuse_tests/cloud.rs"]
mod cloud;
#[path = "fuse_tests/cold.rs"]
mod cold;
#[path = "fuse_tests/differential.rs"]
mod differential;
#[path = "fuse_tests/durability.rs"]
mod durability;
#[path = "fuse_tests/events.rs"]
mod events;
#[path = "fuse_tests/model.rs"]
mod model;
#[path = "fuse_tests/ondemand.rs"]
mod ondemand;
#[path = "fuse_tests/posix.rs"]
mod posix;
#[path = "fuse_tests/programs.rs"]
mod programs;
#[path = "fuse_tests/see.rs"]
mod see;
#[path = "fuse_tests/service.rs"]
mod service;
#[path = "fuse_tests/sync.rs"]
mod sync;
#[path = "fuse_tests/upgrade.rs"]
mod upgrade;
#[path = "fuse_tests/webdriver.rs"]
mod webdriver;
