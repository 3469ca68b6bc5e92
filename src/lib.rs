//! haconiwa: a container supervisor cluster. See DESIGN.md for the layers.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod launcher;
pub mod runtime;
pub mod spec;
pub mod supervisor;
pub mod watch;
