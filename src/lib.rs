//! haconiwa: a container supervisor cluster. See DESIGN.md for the layers.

pub mod cli;
pub mod cluster;
pub mod launcher;
pub mod runtime;
pub mod spec;
