//! Rootfs snapshots: one trait, four backends chosen by what the rootfs lives on.
//!
//! - btrfs: the rootfs is a subvolume; a snapshot is a read-only subvolume snapshot, a
//!   rollback swaps in a writable snapshot of it (O(1) whatever the size);
//! - ZFS: a dataset per container as Proxmox lays them out; `zfs snapshot`, `zfs rollback`,
//!   `zfs clone` through an injectable command runner;
//! - overlay: for rootfs trees nvbind cloned as a fresh upper over a read-only lower, a
//!   snapshot keeps only the upper layer;
//! - copy: the last resort anywhere, reflinks (FICLONE) where the filesystem has them, else a
//!   plain copy keeping modes, owners, xattrs, times, links and device nodes.
//!
//! `backend` is the trait and what all backends share, `choose` picks one; `store` keeps
//! snapshots and their metadata next to the rootfs; `clone` starts bundles from a snapshot;
//! `rootfs` finds a bundle's or container's rootfs. This file only declares and re-exports.

pub mod backend;
pub mod btrfs;
pub mod choose;
pub mod clone;
pub mod copy;
pub mod overlay;
pub mod rootfs;
pub mod store;
pub mod zfs;

pub use backend::{validate_name, Kind};
pub use choose::{backend_for, backend_named};
pub use clone::{has_clone, prepare_rootfs_for_bundle, release};
pub use rootfs::{container_rootfs, spec_rootfs};
pub use store::Store;
