//! Images on one host: import in every form, layers applied as the image spec says, the
//! configuration mapped onto the container, hostile layers refused with nothing written
//! outside the store, bad digests refused, removal and prune.

use crate::common::images::{
    docker_save_oci, docker_save_old, multi_arch_layout, tar_dir, Compress, Image, Kind, Layer,
};
use crate::common::{stderr, stdout, Host};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A host view with its own image store.
struct ImageHost {
    host: Host,
    store: PathBuf,
}

impl ImageHost {
    fn new(tag: &str) -> ImageHost {
        let host = Host::new(tag);
        let store = host.scratch.path.join("images");
        ImageHost { host, store }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.host
            .cmd()
            .env("HACONIWA_IMAGE_STORE", &self.store)
            .args(args)
            .output()
            .expect("run haconiwa")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "haconiwa {args:?} failed: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// Imports a layout written for `img` under the name `name`.
    fn import(&self, img: &Image, name: &str) -> String {
        let dir = self
            .host
            .scratch
            .path
            .join(format!("layout-{}", name.replace(['/', ':'], "_")));
        img.layout(&dir, name);
        self.ok(&["image", "import", dir.to_str().unwrap()])
    }

    /// Writes `<name>.haco`: a container `name` of `image` with the usual namespaces and
    /// the `extra` lines.
    fn def(&self, name: &str, image: &str, extra: &str) -> PathBuf {
        self.host.haco_raw(
            name,
            &format!(
                "haconiwa.define(|c| {{\n c.name = \"{name}\";\n c.image = \"{image}\";\n c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]);\n{extra}\n}});\n"
            ),
        )
    }

    /// Runs the definition `def` with `sh -c script` as its command.
    fn run_sh(&self, def: &Path, script: &str) -> std::process::Output {
        self.run(&["run", def.to_str().unwrap(), "--", "/bin/sh", "-c", script])
    }

    /// Runs `sh -c script` in a container of `image` (as root unless the image says).
    fn sh(&self, image: &str, script: &str) -> std::process::Output {
        let def = self.host.haco_raw(
            "img",
            &format!(
                "haconiwa.define(|c| {{\n c.name = \"img-{}\";\n c.image = \"{image}\";\n c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]);\n}});\n",
                std::process::id()
            ),
        );
        self.run(&["run", def.to_str().unwrap(), "--", "/bin/sh", "-c", script])
    }

    /// Every file of the store (paths relative to it), locks aside.
    fn store_files(&self) -> BTreeSet<String> {
        fn walk(base: &Path, p: &Path, out: &mut BTreeSet<String>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    let rel = e
                        .path()
                        .strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .to_string();
                    if rel.starts_with("locks") || rel.ends_with("lock") {
                        continue;
                    }
                    out.insert(rel);
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        walk(base, &e.path(), out);
                    }
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.store, &self.store, &mut out);
        out
    }
}

fn busybox_image(cmd: &[&str]) -> Image {
    Image::new(
        vec![(
            Layer::new()
                .busybox()
                .dir("etc")
                .file("etc/passwd", b"root:x:0:0::/:/bin/sh\n"),
            Compress::Gzip,
        )],
        json!({"Cmd": cmd, "Env": ["PATH=/bin"]}),
    )
}

#[test]
fn layers_apply_as_the_image_spec_says_and_the_config_maps_onto_the_container() {
    let h = ImageHost::new("img-layers");
    let base = Layer::new()
        .busybox()
        .dir("etc")
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1000::/home:/bin/sh\n",
        )
        .file("etc/group", b"root:x:0:\nweb:x:1000:\nextra:x:2000:web\n")
        .dir("opq")
        .file("opq/old", b"old")
        .file("gone", b"gone")
        .dir("was-dir")
        .file("was-dir/x", b"x")
        .file("was-file", b"f")
        .file("suid", b"#!/bin/sh\n")
        .owned(0, 0, 0o4755)
        .file("owned", b"o")
        .owned(1234, 5678, 0o640)
        .file("xattr", b"x")
        .xattr("user.test", b"kept")
        .hardlink("hl", "bin/busybox")
        .symlink("sl", "/etc/passwd")
        .entry("fifo", Kind::Fifo, 0o600);
    let second = Layer::new()
        .dir("opq")
        .file("opq/new", b"new")
        // Opaque after the layer's own file in that directory: it hides only what is
        // below, whatever its position.
        .file("opq/.wh..wh..opq", b"")
        .file(".wh.gone", b"")
        .file("was-dir", b"now a file")
        .dir("was-file")
        .file("was-file/y", b"now a dir")
        .hardlink("hl2", "bin/busybox");
    let third = Layer::new()
        .file(".wh.was-dir", b"")
        .dir("was-dir")
        .file("was-dir/z", b"a dir again");
    let img = Image::new(
        vec![
            (base, Compress::Gzip),
            (second, Compress::Zstd),
            (third, Compress::None),
        ],
        json!({
            "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["id"],
            "Env": ["PATH=/bin", "FROM_IMAGE=yes", "OVERRIDDEN=image"],
            "WorkingDir": "/opq", "User": "web", "StopSignal": "SIGQUIT",
            "Labels": {"org.example.role": "web"},
        }),
    );
    let out = h.import(&img, "localhost/layers:1");
    assert!(out.contains("imported localhost/layers:1"), "{out}");
    // The configuration: command, user with supplementary groups, env, workdir.
    let def = h.def(
        "cfg",
        "localhost/layers:1",
        "c.env(\"OVERRIDDEN\", \"definition\");",
    );
    let run = h.run(&["run", def.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        stdout(&run).trim(),
        "uid=1000(web) gid=1000(web) groups=2000(extra)"
    );
    let run = h.run_sh(&def, "pwd; echo $FROM_IMAGE $OVERRIDDEN");
    assert_eq!(stdout(&run), "/opq\nyes definition\n", "{}", stderr(&run));
    let shown = h.ok(&["show", def.to_str().unwrap()]);
    assert!(
        shown.contains("org.example.role=web"),
        "labels shown: {shown}"
    );
    assert!(shown.contains("SIGQUIT"), "stop signal shown: {shown}");
    // The layers, as root (a definition's uid wins over the image's User).
    let def = h.def("rootview", "localhost/layers:1", "c.uid = 0; c.gid = 0;");
    let script = "ls /opq; test -e /gone || echo gone-hidden; cat /was-dir/z; echo; \
                  test -e /was-dir/x || echo x-hidden; cat /was-file/y; echo; \
                  stat -c '%a' /suid; stat -c '%u %g %a' /owned; readlink /sl; \
                  stat -c '%h' /hl; test -x /hl2 && echo hl2-copied; stat -c '%F' /fifo";
    let run = h.run_sh(&def, script);
    assert_eq!(
        stdout(&run),
        "new\ngone-hidden\na dir again\nx-hidden\nnow a dir\n4755\n1234 5678 640\n/etc/passwd\n2\nhl2-copied\nfifo\n",
        "{}",
        stderr(&run)
    );
    // The extended attribute, in the layer's directory in the store.
    let xattr_file = std::fs::read_dir(h.store.join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("diff/xattr"))
        .find(|p| p.is_file())
        .expect("the first layer holds /xattr");
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(&xattr_file, "user.test", &mut buf).expect("user.test kept");
    assert_eq!(&buf[..n], b"kept");
    h.host.assert_clean();
}

fn outside_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = PathBuf::from(format!(
        "/tmp/hcw-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("victim"), b"untouched").unwrap();
    p
}

/// Removes the outside directory, also after a failure.
struct Outside(PathBuf);
impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn hostile_layers_are_refused_and_nothing_is_written_outside_the_store() {
    let h = ImageHost::new("img-hostile");
    let out = Outside(outside_dir());
    let o = out.0.display().to_string();
    let victim = format!("{o}/victim");
    let up = "../".repeat(12);
    // A good image first: the store must be left exactly as it was after each refusal.
    h.import(&busybox_image(&["true"]), "localhost/good:1");
    let before = h.store_files();
    let cases: Vec<(&str, Vec<Layer>, &str, &str)> = vec![
        (
            "absolute",
            vec![Layer::new().file(&victim, b"pwned")],
            &victim,
            "absolute path",
        ),
        (
            "dotdot",
            vec![Layer::new().file(&format!("{up}{}", victim.trim_start_matches('/')), b"pwned")],
            "../",
            "'..'",
        ),
        (
            "symlink-same-layer",
            vec![Layer::new().symlink("lnk", &o).file("lnk/victim", b"pwned")],
            "lnk/victim",
            "symlink of this layer",
        ),
        (
            "symlink-across-layers",
            vec![
                Layer::new().symlink("lnk", &o),
                Layer::new().file("lnk/victim", b"pwned"),
            ],
            "lnk/victim",
            "symlink in a lower layer",
        ),
        (
            "symlink-deep-in-a-lower-layer",
            vec![
                Layer::new().dir("a").symlink("a/b", &o),
                Layer::new().file("a/b/victim", b"pwned"),
            ],
            "a/b/victim",
            "symlink in a lower layer",
        ),
        (
            "relative-symlink-across-layers",
            vec![
                Layer::new().symlink("lnk", &up),
                Layer::new().file(&format!("lnk/{}", victim.trim_start_matches('/')), b"pwned"),
            ],
            "lnk/",
            "symlink in a lower layer",
        ),
        (
            "hardlink-absolute",
            vec![Layer::new().hardlink("x", &victim)],
            "x",
            "absolute path",
        ),
        (
            "hardlink-dotdot",
            vec![Layer::new().hardlink("x", &format!("{up}{}", victim.trim_start_matches('/')))],
            "x",
            "'..'",
        ),
        (
            "hardlink-through-symlink",
            vec![Layer::new().symlink("lnk", &o).hardlink("x", "lnk/victim")],
            "x",
            "links are never followed",
        ),
        (
            "hardlink-through-lower-symlink",
            vec![
                Layer::new().symlink("lnk", &o),
                Layer::new().hardlink("x", "lnk/victim"),
            ],
            "x",
            "links are never followed",
        ),
        (
            "whiteout-dotdot",
            vec![Layer::new().dir("d").file("d/.wh...", b"")],
            "d/.wh...",
            "whiteout naming '..'",
        ),
        (
            "whiteout-dot",
            vec![Layer::new().file(".wh..", b"")],
            ".wh..",
            "whiteout naming '.'",
        ),
        (
            "whiteout-nothing",
            vec![Layer::new().file(".wh.", b"")],
            ".wh.",
            "names nothing",
        ),
        (
            "whiteout-through-symlink",
            vec![Layer::new().symlink("lnk", &o).file("lnk/.wh.victim", b"")],
            "lnk/.wh.victim",
            "symlink of this layer",
        ),
        (
            "overlay-attribute",
            vec![Layer::new().dir("d").xattr("trusted.overlay.opaque", b"y")],
            "d",
            "overlayfs' own attribute",
        ),
    ];
    for (name, layers, entry, reason) in cases {
        let img = Image::new(
            layers.into_iter().map(|l| (l, Compress::Gzip)).collect(),
            json!({"Cmd": ["/bin/true"]}),
        );
        let dir = h.host.scratch.path.join(format!("hostile-{name}"));
        let blobs = img.layout(&dir, &format!("localhost/hostile-{name}:1"));
        let res = h.run(&["image", "import", dir.to_str().unwrap()]);
        let err = stderr(&res);
        assert!(
            !res.status.success(),
            "{name}: the import succeeded: {}",
            stdout(&res)
        );
        assert!(
            err.contains(&format!("image localhost/hostile-{name}:1")),
            "{name}: names the image: {err}"
        );
        assert!(
            blobs
                .layers
                .iter()
                .any(|(d, _)| err.contains(&format!("layer {d}"))),
            "{name}: names the layer's digest: {err}"
        );
        assert!(
            err.contains(entry),
            "{name}: names the entry {entry}: {err}"
        );
        assert!(err.contains(reason), "{name}: says why ({reason}): {err}");
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"untouched",
            "{name}: the victim changed"
        );
        let left: Vec<String> = std::fs::read_dir(&out.0)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            left,
            vec!["victim".to_string()],
            "{name}: something was written beside the victim"
        );
        assert_eq!(h.store_files(), before, "{name}: the store changed");
    }
    // A symlink replaced by a file in the same layer: the file replaces the link, nothing
    // is written through it.
    let img = Image::new(
        vec![(
            Layer::new()
                .busybox()
                .symlink("victim-link", &victim)
                .file("victim-link", b"mine"),
            Compress::None,
        )],
        json!({"Cmd": ["/bin/cat", "/victim-link"]}),
    );
    h.import(&img, "localhost/replaced:1");
    let run = h.sh("localhost/replaced:1", "cat /victim-link");
    assert_eq!(stdout(&run), "mine", "{}", stderr(&run));
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    // Device nodes are skipped, and said so.
    let img = Image::new(
        vec![(
            Layer::new()
                .busybox()
                .dir("dev")
                .entry("dev/sda", Kind::Char(8, 0), 0o666),
            Compress::None,
        )],
        json!({"Cmd": ["/bin/true"]}),
    );
    let dir = h.host.scratch.path.join("device");
    img.layout(&dir, "localhost/device:1");
    let res = h.run(&["image", "import", dir.to_str().unwrap()]);
    assert!(res.status.success(), "{}", stderr(&res));
    assert!(
        stderr(&res).contains("dev/sda (character device: skipped"),
        "{}",
        stderr(&res)
    );
    let run = h.sh("localhost/device:1", "test -e /dev/sda || echo no-sda");
    assert_eq!(stdout(&run), "no-sda\n", "{}", stderr(&run));
    let nodes: Vec<PathBuf> = std::fs::read_dir(h.store.join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("diff/dev/sda"))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    assert!(nodes.is_empty(), "device nodes in the store: {nodes:?}");
    h.host.assert_clean();
}

/// A way to spoil a layout's blobs.
type Spoil = Box<dyn Fn(&Path, &crate::common::images::Blobs)>;

#[test]
fn bad_digests_missing_and_truncated_blobs_are_refused_and_the_store_is_unchanged() {
    let h = ImageHost::new("img-digests");
    h.import(&busybox_image(&["true"]), "localhost/good:1");
    let before = h.store_files();
    let img = Image::new(
        vec![(
            Layer::new().file("a", b"some content of a layer"),
            Compress::Gzip,
        )],
        json!({"Cmd": ["/a"]}),
    );
    let cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "corrupt",
            Box::new(|dir, b| {
                let p = dir
                    .join("blobs/sha256")
                    .join(b.layers[0].0.trim_start_matches("sha256:"));
                let mut bytes = std::fs::read(&p).unwrap();
                let n = bytes.len();
                bytes[n - 5] ^= 0xff;
                std::fs::write(&p, bytes).unwrap();
            }),
            "does not match its digest",
        ),
        (
            "missing",
            Box::new(|dir, b| {
                std::fs::remove_file(
                    dir.join("blobs/sha256")
                        .join(b.layers[0].0.trim_start_matches("sha256:")),
                )
                .unwrap();
            }),
            "not in the layout",
        ),
        (
            "truncated",
            Box::new(|dir, b| {
                let p = dir
                    .join("blobs/sha256")
                    .join(b.layers[0].0.trim_start_matches("sha256:"));
                let bytes = std::fs::read(&p).unwrap();
                std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            }),
            "truncated",
        ),
        (
            "manifest",
            Box::new(|dir, b| {
                let p = dir
                    .join("blobs/sha256")
                    .join(b.manifest.trim_start_matches("sha256:"));
                let mut bytes = std::fs::read(&p).unwrap();
                bytes.push(b' ');
                std::fs::write(&p, bytes).unwrap();
            }),
            "hashes to",
        ),
    ];
    for (name, spoil, reason) in cases {
        let dir = h.host.scratch.path.join(format!("bad-{name}"));
        let blobs = img.layout(&dir, &format!("localhost/bad-{name}:1"));
        spoil(&dir, &blobs);
        let res = h.run(&["image", "import", dir.to_str().unwrap()]);
        assert!(!res.status.success(), "{name}: imported");
        assert!(stderr(&res).contains(reason), "{name}: {}", stderr(&res));
        assert_eq!(h.store_files(), before, "{name}: the store changed");
    }
    // A layer whose content is not what the configuration's diff_id says.
    let mut b = img.blobs();
    let dir = h.host.scratch.path.join("bad-diffid");
    let config_pos = b.blobs.iter().position(|(d, _)| *d == b.config).unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&b.blobs[config_pos].1).unwrap();
    config["rootfs"]["diff_ids"][0] = json!(crate::common::images::digest(b"something else"));
    let cb = serde_json::to_vec(&config).unwrap();
    let cd = crate::common::images::digest(&cb);
    b.blobs[config_pos] = (cd.clone(), cb.clone());
    let mpos = b.blobs.iter().position(|(d, _)| *d == b.manifest).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&b.blobs[mpos].1).unwrap();
    manifest["config"]["digest"] = json!(cd);
    manifest["config"]["size"] = json!(cb.len());
    let mb = serde_json::to_vec(&manifest).unwrap();
    let md = crate::common::images::digest(&mb);
    b.blobs[mpos] = (md.clone(), mb.clone());
    crate::common::images::write_layout(
        &dir,
        &b.blobs,
        json!([{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mb.len(),
                "annotations": {"io.containerd.image.name": "localhost/bad-diffid:1"}}]),
    );
    let res = h.run(&["image", "import", dir.to_str().unwrap()]);
    assert!(!res.status.success());
    assert!(
        stderr(&res).contains("the configuration says"),
        "{}",
        stderr(&res)
    );
    assert_eq!(h.store_files(), before, "diff_id: the store changed");
}

#[test]
fn archives_of_every_form_import_and_an_index_gives_this_hosts_platform() {
    let h = ImageHost::new("img-forms");
    let marker = |m: &str| {
        Image::new(
            vec![
                (Layer::new().busybox(), Compress::Gzip),
                (Layer::new().file("marker", m.as_bytes()), Compress::Zstd),
            ],
            json!({"Cmd": ["/bin/cat", "/marker"], "Env": ["PATH=/bin"]}),
        )
    };
    let s = &h.host.scratch.path;
    // oci-archive, plain and gzip-compressed.
    let layout = s.join("l-oci");
    marker("oci-archive").layout(&layout, "localhost/forms/oci:1");
    tar_dir(&layout, &s.join("oci.tar"));
    h.ok(&["image", "import", s.join("oci.tar").to_str().unwrap()]);
    let gz = std::process::Command::new("gzip")
        .args(["-k", "-f"])
        .arg(s.join("oci.tar"))
        .status()
        .unwrap();
    assert!(gz.success());
    h.ok(&[
        "image",
        "import",
        s.join("oci.tar.gz").to_str().unwrap(),
        "--name",
        "localhost/forms/oci-gz:1",
    ]);
    // docker save, both forms.
    docker_save_old(&marker("docker-old"), &s.join("old.tar"), "forms/old:1");
    h.ok(&["image", "import", s.join("old.tar").to_str().unwrap()]);
    docker_save_oci(&marker("docker-oci"), &s.join("new.tar"), "forms/new:1", s);
    h.ok(&["image", "import", s.join("new.tar").to_str().unwrap()]);
    for (name, want) in [
        ("localhost/forms/oci:1", "oci-archive"),
        ("localhost/forms/oci-gz:1", "oci-archive"),
        ("forms/old:1", "docker-old"),
        ("docker.io/forms/new:1", "docker-oci"),
    ] {
        let run = h.sh(name, "cat /marker");
        assert_eq!(stdout(&run), want, "{name}: {}", stderr(&run));
    }
    // The layers the four share are stored once.
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&h.ok(&["image", "ls", "--json"])).unwrap();
    // The plain and the compressed archive hold one image: one record, two names.
    assert_eq!(list.len(), 3, "{list:?}");
    let names: usize = list
        .iter()
        .map(|i| i["names"].as_array().unwrap().len())
        .sum();
    assert_eq!(names, 4, "{list:?}");
    let layers = std::fs::read_dir(h.store.join("layers")).unwrap().count();
    assert_eq!(layers, 1 + 3, "one busybox layer and three marker layers");
    // A multi-platform index: this host's platform is chosen, another one on request.
    let mut arm = marker("arm64");
    arm.arch = "arm64".into();
    let amd = marker("amd64");
    let dir = s.join("multi");
    multi_arch_layout(&dir, &[&arm, &amd], "localhost/forms/multi:1");
    h.ok(&["image", "import", dir.to_str().unwrap()]);
    let run = h.sh("localhost/forms/multi:1", "cat /marker");
    assert_eq!(stdout(&run), "amd64", "{}", stderr(&run));
    let out = h.ok(&[
        "image",
        "import",
        dir.to_str().unwrap(),
        "--platform",
        "linux/arm64",
        "--name",
        "localhost/forms/multi-arm:1",
    ]);
    assert!(out.contains("localhost/forms/multi-arm:1"), "{out}");
    let inspect: serde_json::Value =
        serde_json::from_str(&h.ok(&["image", "inspect", "localhost/forms/multi-arm:1"])).unwrap();
    assert_eq!(inspect["platform"], "linux/arm64");
    let res = h.run(&[
        "image",
        "import",
        dir.to_str().unwrap(),
        "--platform",
        "linux/s390x",
    ]);
    assert!(
        stderr(&res).contains(
            "no manifest for linux/s390x in the index (it has: linux/arm64, linux/amd64)"
        ),
        "{}",
        stderr(&res)
    );
    h.host.assert_clean();
}

#[test]
fn an_image_of_120_layers_mounts() {
    let h = ImageHost::new("img-120");
    let mut layers = vec![(Layer::new().busybox().dir("l"), Compress::Gzip)];
    for i in 1..120 {
        layers.push((
            Layer::new().file(&format!("l/{i}"), i.to_string().as_bytes()),
            Compress::Gzip,
        ));
    }
    let img = Image::new(layers, json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}));
    h.import(&img, "localhost/many:1");
    let run = h.sh("localhost/many:1", "ls /l | wc -l; cat /l/1 /l/119");
    assert_eq!(
        stdout(&run).split_whitespace().collect::<Vec<_>>(),
        ["119", "1119"],
        "{}",
        stderr(&run)
    );
    h.host.assert_clean();
}

#[test]
fn removal_keeps_shared_layers_and_prune_keeps_what_containers_use() {
    let h = ImageHost::new("img-gc");
    let shared = Layer::new().busybox();
    let a = Image::new(
        vec![
            (shared.clone(), Compress::Gzip),
            (Layer::new().file("a", b"a"), Compress::Gzip),
        ],
        json!({"Cmd": ["/bin/cat", "/a"], "Env": ["PATH=/bin"]}),
    );
    let b = Image::new(
        vec![
            (shared, Compress::Gzip),
            (Layer::new().file("b", b"b"), Compress::Gzip),
        ],
        json!({"Cmd": ["/bin/sleep", "3600"], "Env": ["PATH=/bin"]}),
    );
    h.import(&a, "localhost/gc-a:1");
    h.import(&b, "localhost/gc-b:1");
    assert_eq!(
        std::fs::read_dir(h.store.join("layers")).unwrap().count(),
        3
    );
    h.ok(&["image", "rm", "localhost/gc-a:1"]);
    assert_eq!(
        std::fs::read_dir(h.store.join("layers")).unwrap().count(),
        2,
        "the shared layer stays"
    );
    let run = h.sh("localhost/gc-b:1", "cat /b");
    assert_eq!(stdout(&run), "b", "{}", stderr(&run));
    // A running container keeps its image.
    let def = h.def("gc-b", "localhost/gc-b:1", "");
    h.ok(&["run", "-D", def.to_str().unwrap()]);
    let res = h.run(&["image", "rm", "localhost/gc-b:1"]);
    assert!(!res.status.success());
    assert!(
        stderr(&res).contains("is used by container gc-b"),
        "{}",
        stderr(&res)
    );
    h.ok(&["image", "rm", "--force", "localhost/gc-b:1"]);
    let pruned: serde_json::Value =
        serde_json::from_str(&h.ok(&["image", "prune", "--json"])).unwrap();
    assert_eq!(
        pruned["layers"], 0,
        "a running container's layers stay: {pruned}"
    );
    assert_eq!(
        std::fs::read_dir(h.store.join("layers")).unwrap().count(),
        2
    );
    h.ok(&["kill", "gc-b", "--timeout", "1"]);
    let pruned: serde_json::Value =
        serde_json::from_str(&h.ok(&["image", "prune", "--json"])).unwrap();
    assert_eq!(pruned["images"].as_array().unwrap().len(), 1, "{pruned}");
    assert_eq!(pruned["layers"], 2, "{pruned}");
    let left: Vec<_> = std::fs::read_dir(h.store.join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "layers left: {left:?}");
    assert_eq!(
        std::fs::read_dir(h.store.join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(h.ok(&["image", "ls", "--json"]).trim(), "[]");
    h.host.assert_clean();
}

#[test]
fn provision_steps_on_an_image_make_one_shared_layer_and_new_image_writes_a_definition() {
    let h = ImageHost::new("img-prov");
    h.import(
        &busybox_image(&["/bin/cat", "/etc/passwd"]),
        "localhost/prov:1",
    );
    let def = h.host.scratch.path.join("prov.haco");
    h.ok(&["new", def.to_str().unwrap(), "--image", "localhost/prov:1"]);
    // The boilerplate runs as written: the image's own command.
    let run = h.run(&["run", def.to_str().unwrap()]);
    assert_eq!(stdout(&run), "root:x:0:0::/:/bin/sh\n", "{}", stderr(&run));
    let text = std::fs::read_to_string(&def).unwrap().replace(
        "// c.run_shell(\"echo provisioned > /marker\", #{ name: \"marker\" });",
        "c.run_shell(\"echo provisioned > /marker; rm /etc/passwd\", #{ name: \"marker\" });",
    );
    std::fs::write(&def, text).unwrap();
    let check = "cat /marker; test -e /etc/passwd || echo passwd-gone";
    let first = h.run_sh(&def, check);
    assert_eq!(
        stdout(&first),
        "provisioned\npasswd-gone\n",
        "{}",
        stderr(&first)
    );
    assert!(
        stderr(&first).contains("provision step 'marker' on image"),
        "{}",
        stderr(&first)
    );
    let second = h.run_sh(&def, check);
    assert_eq!(stdout(&second), "provisioned\npasswd-gone\n");
    assert!(
        !stderr(&second).contains("provision step"),
        "ran once: {}",
        stderr(&second)
    );
    // The image's own layer is untouched: another definition of it sees its passwd.
    let plain = h.sh(
        "localhost/prov:1",
        "cat /etc/passwd; test -e /marker || echo no-marker",
    );
    assert_eq!(
        stdout(&plain),
        "root:x:0:0::/:/bin/sh\nno-marker\n",
        "{}",
        stderr(&plain)
    );
    // A failing step leaves no layer behind.
    let layers = std::fs::read_dir(h.store.join("layers")).unwrap().count();
    let bad = std::fs::read_to_string(&def)
        .unwrap()
        .replace("rm /etc/passwd", "exit 3");
    std::fs::write(&def, bad).unwrap();
    let res = h.run(&["run", def.to_str().unwrap()]);
    assert!(!res.status.success());
    assert!(
        stderr(&res).contains("provision step 'marker'"),
        "{}",
        stderr(&res)
    );
    assert_eq!(
        std::fs::read_dir(h.store.join("layers")).unwrap().count(),
        layers
    );
    assert_eq!(std::fs::read_dir(h.store.join("tmp")).unwrap().count(), 0);
    h.host.assert_clean();
}

#[test]
fn an_image_root_works_in_a_user_namespace_and_read_only() {
    let h = ImageHost::new("img-userns");
    let img = Image::new(
        vec![
            (
                Layer::new()
                    .busybox()
                    .dir("etc")
                    .file("etc/passwd", b"root:x:0:0::/:/bin/sh\n"),
                Compress::Gzip,
            ),
            (
                Layer::new().file("etc/motd", b"second layer\n"),
                Compress::Gzip,
            ),
        ],
        json!({"Cmd": ["/bin/cat", "/etc/motd"], "Env": ["PATH=/bin"]}),
    );
    h.import(&img, "localhost/userns:1");
    let def = h.def(
        "userns",
        "localhost/userns:1",
        "c.namespace.unshare([\"user\"]); c.namespace.uid_map(0, 200000, 65536);",
    );
    let run = h.run_sh(&def, "cat /etc/motd; id -u; touch /new && echo wrote");
    assert_eq!(stdout(&run), "second layer\n0\nwrote\n", "{}", stderr(&run));
    // Read-only: one layer or several, nothing is writable.
    let ro = h.def("ro", "localhost/userns:1", "c.readonly_rootfs = true;");
    let run = h.run_sh(&ro, "cat /etc/motd; touch /new || echo read-only");
    assert!(
        stdout(&run).starts_with("second layer\n"),
        "{}",
        stderr(&run)
    );
    assert!(
        stdout(&run).ends_with("read-only\n"),
        "{}{}",
        stdout(&run),
        stderr(&run)
    );
    let one = Image::new(
        vec![(Layer::new().busybox(), Compress::Gzip)],
        json!({"Cmd": ["/bin/true"], "Env": ["PATH=/bin"]}),
    );
    h.import(&one, "localhost/one:1");
    let ro1 = h.def("ro1", "localhost/one:1", "c.readonly_rootfs = true;");
    let run = h.run_sh(&ro1, "ls /bin/busybox; touch /new || echo read-only");
    assert!(
        stdout(&run).ends_with("read-only\n"),
        "{}{}",
        stdout(&run),
        stderr(&run)
    );
    h.host.assert_clean();
}
