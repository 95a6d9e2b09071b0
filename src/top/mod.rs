//! `cgqos top`: what the hierarchy is doing, sampled.
//!
//! - [`sample`] reads one snapshot of the tree (cgroup files, the tasks' CPU times) through
//!   [`crate::cgroupfs::CgroupFs`] and [`crate::procfs::Procfs`] with caller-given roots;
//! - [`model`] turns two snapshots into rows with rates (pure);
//! - [`render`] lays the rows out as text (pure);
//! - [`term`] drives the live terminal view (raw mode, keys, signals).

pub mod model;
pub mod render;
pub mod sample;
pub mod term;
