//! How a node gets the image of a container it must run, before the launch: from its
//! own store, else from the image's registry, else from another member that has it
//! (over the cluster's own port, mutual TLS when the cluster has it; every digest checked
//! as a registry's are), so an image imported on one host reaches the others without a
//! registry. A reference by digest asks the members first (content-addressed: any copy
//! is the same); one by tag asks its registry first (the registry says what the tag is
//! now). Pulls of one image on this node happen once: later launches wait for the first.

use super::error::OpError;
use super::shared::{lock, Supervisor};
use crate::cluster::state::NodeStatus;
use crate::image::ingest::Ingest;
use crate::image::install::{self, BoxFuture, FetchError, Fetched, Fetcher, Progress};
use crate::image::registry::RegistryFetcher;
use crate::image::{Digest, ImageError, Store};
use crate::spec::ImageRef;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_stream::StreamExt;

/// Bytes fetched and to fetch, as an install goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pulled {
    /// Bytes so far.
    pub done: u64,
    /// Bytes in all (0 until the manifest is read).
    pub total: u64,
}

/// Why no source could give an image: each source's reason, in the order asked.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|(source, e)| format!("{source}: {e}")).collect::<Vec<_>>().join("; "))]
pub struct PullFailed(pub Vec<(String, ImageError)>);

/// This node's images.
pub struct Images {
    store: Store,
    /// One lock per reference: a second launch of an image waits for the first pull.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Images {
    /// The images of the store at the node's configured path.
    pub fn new(core: &Supervisor) -> Result<Images, ImageError> {
        Ok(Images {
            store: Store::open(&core.config.image_store)?,
            pulls: Mutex::new(HashMap::new()),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the store has the image.
    pub fn has(&self, reference: &str) -> bool {
        self.store.find(reference).is_ok()
    }

    /// Makes sure the image is in the store, telling `progress` how the transfer goes;
    /// the error says why no source could give it.
    pub async fn ensure(
        &self,
        core: &Arc<Supervisor>,
        reference: &str,
        progress: tokio::sync::watch::Sender<Pulled>,
    ) -> Result<(), PullFailed> {
        let gate = lock(&self.pulls)
            .entry(reference.to_string())
            .or_default()
            .clone();
        let _one_at_a_time = gate.lock().await;
        if self.has(reference) {
            return Ok(());
        }
        let here = |e: ImageError| PullFailed(vec![("this node".to_string(), e)]);
        let r = ImageRef::parse(reference).map_err(|e| here(ImageError::Invalid(e.to_string())))?;
        let expect = match r.digest.as_deref() {
            Some(d) => Some(Digest::parse(d).map_err(|e| here(ImageError::Invalid(e)))?),
            None => None,
        };
        let registry: Arc<dyn Fetcher> =
            Arc::new(RegistryFetcher::new(&core.config.registry, &r).map_err(here)?);
        let members: Arc<dyn Fetcher> = Arc::new(MemberFetcher::new(core.clone(), &r));
        let sources = if expect.is_some() {
            vec![members, registry]
        } else {
            vec![registry, members]
        };
        let totals: Arc<Mutex<HashMap<Digest, (u64, u64)>>> = Arc::default();
        let tell = {
            let totals = totals.clone();
            move |p: Progress| {
                let mut t = lock(&totals);
                match p {
                    Progress::Resolved { todo, .. } => {
                        for (d, size) in todo {
                            t.entry(d).or_insert((0, size));
                        }
                    }
                    Progress::Bytes { blob, done, total } => {
                        t.insert(blob, (done, total));
                    }
                    _ => return,
                }
                let sum = t.values().fold(Pulled::default(), |a, (d, s)| Pulled {
                    done: a.done + d,
                    total: a.total + s,
                });
                progress.send_replace(sum);
            }
        };
        let opts = install::Options {
            platform: None,
            names: vec![r.unpinned().to_string()],
            progress: Some(Arc::new(tell)),
        };
        let mut reasons = Vec::new();
        for source in sources {
            let name = source.source();
            match install::install(
                &self.store,
                source,
                &r.to_string(),
                r.target(),
                expect.as_ref(),
                &opts,
            )
            .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::info!("image {reference} from {name}: {e}");
                    // A bad image is bad from everywhere.
                    let bad_image =
                        matches!(e, ImageError::Entry { .. } | ImageError::Layer { .. });
                    reasons.push((name, e));
                    if bad_image {
                        break;
                    }
                }
            }
        }
        Err(PullFailed(reasons))
    }
}

/// The other members as a source: the first that has the image serves it all.
struct MemberFetcher {
    core: Arc<Supervisor>,
    reference: String,
    /// The member that answered the manifest.
    chosen: Mutex<Option<String>>,
}

impl MemberFetcher {
    fn new(core: Arc<Supervisor>, r: &ImageRef) -> MemberFetcher {
        MemberFetcher {
            core,
            reference: r.to_string(),
            chosen: Mutex::new(None),
        }
    }

    /// Members that are up, this one excepted, in id order.
    fn members(&self) -> Vec<String> {
        let state = self.core.state();
        state
            .nodes()
            .values()
            .filter(|n| n.id != self.core.id && n.status == NodeStatus::Up)
            .map(|n| n.addr.clone())
            .collect()
    }
}

impl Fetcher for MemberFetcher {
    fn source(&self) -> String {
        "the other members".into()
    }

    fn manifest<'a>(&'a self, target: &'a str) -> BoxFuture<'a, Result<Fetched, FetchError>> {
        Box::pin(async move {
            // The first manifest is asked for by reference, the ones it names by digest.
            let asked = if target.starts_with("sha256:") {
                target.to_string()
            } else {
                self.reference.clone()
            };
            let chosen = lock(&self.chosen).clone();
            let candidates = match chosen {
                Some(a) => vec![a],
                None => self.members(),
            };
            let mut missing = Vec::new();
            for addr in candidates {
                let asked = self.core.peers.image_manifest(
                    &addr,
                    &asked,
                    std::time::Duration::from_secs(10),
                );
                match asked.await {
                    Ok(reply) => {
                        *lock(&self.chosen) = Some(addr);
                        return Ok(Fetched {
                            bytes: reply.bytes,
                            media_type: None,
                            digest: Digest::parse(&reply.digest).ok(),
                        });
                    }
                    Err(e) => missing.push(format!("{addr}: {e}")),
                }
            }
            Err(FetchError::NotFound(if missing.is_empty() {
                "no other member is up".into()
            } else {
                missing.join("; ")
            }))
        })
    }

    fn blob<'a>(
        &'a self,
        digest: &'a Digest,
        ingest: &'a mut Ingest,
        progress: &'a (dyn Fn(u64) + Send + Sync),
    ) -> BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            let Some(addr) = lock(&self.chosen).clone() else {
                return Err(FetchError::NotFound("no member chosen".into()));
            };
            let offset = ingest.offset();
            let digest = digest.to_string();
            let mut stream = self
                .core
                .peers
                .image_blob(&addr, &digest, offset)
                .await
                .map_err(|e| match e {
                    OpError::NotFound(m) => FetchError::NotFound(m),
                    e => FetchError::Transfer(format!("{addr}: {e}")),
                })?;
            ingest
                .restart_at(offset)
                .map_err(|e| FetchError::Transfer(e.to_string()))?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| FetchError::Transfer(format!("{addr}: {e}")))?;
                ingest
                    .write_progress(&chunk, progress)
                    .map_err(FetchError::Refused)?;
            }
            Ok(())
        })
    }
}
