//! Test images made by the tests themselves, offline: layers written header by header
//! with the tar crate (so that hostile entries, which its own path checks would refuse,
//! can be written too), gzip or zstd, an image configuration, and the forms an image
//! travels in: an OCI layout, an `oci-archive`, `docker save` (the older `manifest.json`
//! form and the OCI one), a multi-platform index.

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::Path;

/// What an entry is.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A regular file with these bytes.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symlink to this target.
    Symlink(String),
    /// A hard link to this path.
    Hardlink(String),
    /// A character device.
    Char(u32, u32),
    /// A FIFO.
    Fifo,
}

/// One tar entry, its path written as given.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The path, verbatim.
    pub path: String,
    /// What it is.
    pub kind: Kind,
    /// Permission bits (incl. setuid and friends).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Extended attributes (a PAX header before the entry).
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// A layer: entries in order.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    /// Its entries.
    pub entries: Vec<Entry>,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Layer {
    /// An empty layer.
    pub fn new() -> Layer {
        Layer::default()
    }

    /// Adds an entry.
    pub fn entry(mut self, path: &str, kind: Kind, mode: u32) -> Layer {
        self.entries.push(Entry {
            path: path.to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            xattrs: Vec::new(),
        });
        self
    }

    /// A file (0644).
    pub fn file(self, path: &str, content: &[u8]) -> Layer {
        self.entry(path, Kind::File(content.to_vec()), 0o644)
    }

    /// A directory (0755).
    pub fn dir(self, path: &str) -> Layer {
        self.entry(path, Kind::Dir, 0o755)
    }

    /// A symlink.
    pub fn symlink(self, path: &str, target: &str) -> Layer {
        self.entry(path, Kind::Symlink(target.into()), 0o777)
    }

    /// A hard link.
    pub fn hardlink(self, path: &str, target: &str) -> Layer {
        self.entry(path, Kind::Hardlink(target.into()), 0o644)
    }

    /// Sets owner and mode of the last entry.
    pub fn owned(mut self, uid: u64, gid: u64, mode: u32) -> Layer {
        if let Some(e) = self.entries.last_mut() {
            e.uid = uid;
            e.gid = gid;
            e.mode = mode;
        }
        self
    }

    /// Adds an extended attribute to the last entry.
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Layer {
        if let Some(e) = self.entries.last_mut() {
            e.xattrs.push((name.into(), value.to_vec()));
        }
        self
    }

    /// The static busybox of the host as /bin/busybox with the applets a test uses.
    pub fn busybox(self) -> Layer {
        let bb = std::fs::read("/bin/busybox").expect("read /bin/busybox (busybox-static)");
        let mut l = self.dir("bin").entry("bin/busybox", Kind::File(bb), 0o755);
        for applet in [
            "sh", "cat", "ls", "stat", "id", "echo", "test", "sleep", "httpd", "wget", "readlink",
            "find", "touch", "true", "wc", "mkdir", "pwd",
        ] {
            l = l.symlink(&format!("bin/{applet}"), "busybox");
        }
        l
    }

    /// The uncompressed tar stream.
    pub fn tar(&self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in &self.entries {
            if !e.xattrs.is_empty() {
                let mut records = Vec::new();
                for (k, v) in &e.xattrs {
                    records.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
                }
                let mut h = tar::Header::new_ustar();
                set_raw(&mut h.as_old_mut().name, b"PaxHeader");
                h.set_entry_type(tar::EntryType::XHeader);
                h.set_size(records.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append(&h, &records[..]).unwrap();
            }
            let mut h = tar::Header::new_gnu();
            assert!(
                e.path.len() <= 100,
                "test paths fit the old header: {}",
                e.path
            );
            set_raw(&mut h.as_old_mut().name, e.path.as_bytes());
            h.set_mode(e.mode);
            h.set_uid(e.uid);
            h.set_gid(e.gid);
            h.set_mtime(1_700_000_000);
            let data: Vec<u8> = match &e.kind {
                Kind::File(c) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    c.clone()
                }
                Kind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    Vec::new()
                }
                Kind::Symlink(t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    set_raw(&mut h.as_old_mut().linkname, t.as_bytes());
                    Vec::new()
                }
                Kind::Hardlink(t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    set_raw(&mut h.as_old_mut().linkname, t.as_bytes());
                    Vec::new()
                }
                Kind::Char(ma, mi) => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_device_major(*ma).unwrap();
                    h.set_device_minor(*mi).unwrap();
                    Vec::new()
                }
                Kind::Fifo => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    Vec::new()
                }
            };
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }
}

fn set_raw(field: &mut [u8; 100], bytes: &[u8]) {
    field.fill(0);
    field[..bytes.len()].copy_from_slice(bytes);
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// `sha256:<hex>` of bytes.
pub fn digest(b: &[u8]) -> String {
    let d = Sha256::digest(b);
    format!(
        "sha256:{}",
        d.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

fn compress(raw: &[u8], c: Compress) -> Vec<u8> {
    match c {
        Compress::None => raw.to_vec(),
        Compress::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        Compress::Zstd => zstd::stream::encode_all(raw, 1).unwrap(),
    }
}

fn media(c: Compress) -> &'static str {
    match c {
        Compress::None => "application/vnd.oci.image.layer.v1.tar",
        Compress::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compress::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// An image: layers, the `config` section of its configuration, its platform.
#[derive(Debug, Clone)]
pub struct Image {
    /// Layers, base first, each with its compression.
    pub layers: Vec<(Layer, Compress)>,
    /// The configuration's `config` (Entrypoint, Cmd, Env, User, …).
    pub config: Value,
    /// `amd64`, `arm64`, …
    pub arch: String,
}

/// The blobs of an image: digest → bytes, and the manifest's digest and size.
pub struct Blobs {
    /// Every blob.
    pub blobs: Vec<(String, Vec<u8>)>,
    /// The manifest's digest.
    pub manifest: String,
    /// Its size.
    pub manifest_size: usize,
    /// The configuration's digest.
    pub config: String,
    /// Layer blob digests and their (uncompressed) tar streams.
    pub layers: Vec<(String, Vec<u8>)>,
}

impl Image {
    /// An image of these layers running `cmd`.
    pub fn new(layers: Vec<(Layer, Compress)>, config: Value) -> Image {
        Image {
            layers,
            config,
            arch: "amd64".into(),
        }
    }

    /// Its blobs, manifest last.
    pub fn blobs(&self) -> Blobs {
        let mut blobs = Vec::new();
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layers = Vec::new();
        for (l, c) in &self.layers {
            let raw = l.tar();
            diff_ids.push(digest(&raw));
            let blob = compress(&raw, *c);
            let d = digest(&blob);
            descs.push(json!({"mediaType": media(*c), "digest": d, "size": blob.len()}));
            layers.push((d.clone(), raw));
            blobs.push((d, blob));
        }
        let config = json!({
            "architecture": self.arch, "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let cb = serde_json::to_vec(&config).unwrap();
        let cd = digest(&cb);
        blobs.push((cd.clone(), cb.clone()));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cb.len()},
            "layers": descs,
        });
        let mb = serde_json::to_vec(&manifest).unwrap();
        let md = digest(&mb);
        let size = mb.len();
        blobs.push((md.clone(), mb));
        Blobs {
            blobs,
            manifest: md,
            manifest_size: size,
            config: cd,
            layers,
        }
    }

    /// Writes an OCI layout at `dir` naming the image `name`; returns its blobs.
    pub fn layout(&self, dir: &Path, name: &str) -> Blobs {
        let b = self.blobs();
        write_layout(
            dir,
            &b.blobs,
            json!([{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": b.manifest, "size": b.manifest_size,
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "1"},
            }]),
        );
        b
    }
}

/// Writes an OCI layout of these blobs with this `manifests` list.
pub fn write_layout(dir: &Path, blobs: &[(String, Vec<u8>)], manifests: Value) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    for (d, bytes) in blobs {
        std::fs::write(
            dir.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
            bytes,
        )
        .unwrap();
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).unwrap(),
    )
    .unwrap();
}

/// A multi-platform layout: an index of one manifest per image, named `name`.
pub fn multi_arch_layout(dir: &Path, images: &[&Image], name: &str) -> Vec<Blobs> {
    let mut all = Vec::new();
    let mut entries = Vec::new();
    let mut blobs_of = Vec::new();
    for img in images {
        let b = img.blobs();
        entries.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": b.manifest, "size": b.manifest_size,
            "platform": {"architecture": img.arch, "os": "linux"},
        }));
        all.extend(b.blobs.iter().cloned());
        blobs_of.push(b);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let id = digest(&index);
    all.push((id.clone(), index.clone()));
    write_layout(
        dir,
        &all,
        json!([{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": id, "size": index.len(),
            "annotations": {"io.containerd.image.name": name},
        }]),
    );
    blobs_of
}

/// Tars a directory's files (the layout) into `out`, paths relative to it.
pub fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
}

/// A `docker save` tarball of the older form: manifest.json, `<id>/layer.tar` per
/// layer (uncompressed), `<config hex>.json`, `repositories`.
pub fn docker_save_old(img: &Image, out: &Path, repo_tag: &str) {
    let b = img.blobs();
    let mut t = tar::Builder::new(std::fs::File::create(out).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append(&h, data).unwrap();
    };
    let config_name = format!("{}.json", b.config.trim_start_matches("sha256:"));
    let config = b
        .blobs
        .iter()
        .find(|(d, _)| *d == b.config)
        .unwrap()
        .1
        .clone();
    add(&config_name, &config);
    let mut layer_names = Vec::new();
    for (i, (_, raw)) in b.layers.iter().enumerate() {
        let name = format!("{:064x}/layer.tar", i + 1);
        add(&name, raw);
        layer_names.push(name);
    }
    let manifest = json!([{"Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    t.finish().unwrap();
}

/// A `docker save` tarball of the OCI form (Docker 25 and later): an OCI layout with
/// `manifest.json` beside it.
pub fn docker_save_oci(img: &Image, out: &Path, repo_tag: &str, scratch: &Path) {
    let dir = scratch.join("docker-save-oci");
    let name = if repo_tag.contains('/') {
        format!("docker.io/{repo_tag}")
    } else {
        format!("docker.io/library/{repo_tag}")
    };
    let b = img.layout(&dir, &name);
    let layers: Vec<String> = b
        .layers
        .iter()
        .map(|(d, _)| format!("blobs/sha256/{}", d.trim_start_matches("sha256:")))
        .collect();
    let manifest = json!([{
        "Config": format!("blobs/sha256/{}", b.config.trim_start_matches("sha256:")),
        "RepoTags": [repo_tag], "Layers": layers,
    }]);
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    tar_dir(&dir, out);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bytes that do not compress (a big layer whose transfer takes a while).
pub fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
