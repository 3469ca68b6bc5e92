//! haconiwa: a container supervisor cluster.
//!
//! # Layout
//!
//! Layers, bottom up (an arrow only points down); `docs/architecture.md` has the whole
//! map, the flow of a spawn and of a rule evaluation, and the process model.
//!
//! - [`api`]: the wire (generated gRPC code, the token check, the client).
//! - [`spec`]: the container model and the sandboxed `.haco` / `.watch` loaders.
//! - [`launcher`]: one container from a spec (synchronous; all `unsafe` lives here).
//! - [`image`]: this host's OCI image store (pull, import, layers unpacked safely).
//! - [`runtime`]: local containers on this host (state, monitors, bootstrap, provision).
//! - [`cluster`]: Raft types, the deterministic replicated state, storage, transport.
//! - [`decide`]: every decision that can be pure (placement, schedules, reconcile).
//! - [`supervisor`]: the daemon that wires it all and carries the decisions out.
//! - [`mirror`]: the optional copy of the state to etcd, and rules registered there.
//! - [`oci`]: the launcher behind runc's command line (OCI bundles, runtime-spec's
//!   lifecycle).
//! - [`cli`]: the commands.

// `unsafe` lives only in the launcher (each block with a `SAFETY:` comment); anywhere
// else it does not compile.
#![deny(unsafe_code)]

pub mod api;
pub mod cli;
pub mod cluster;
pub mod decide;
pub mod image;
#[allow(unsafe_code)]
pub mod launcher;
pub mod mirror;
pub mod oci;
pub mod runtime;
pub mod spec;
pub mod supervisor;
