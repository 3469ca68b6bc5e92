//! Pulls from a real registry (Debian's docker-registry on loopback): tags, digests, a
//! multi-platform index, two pulls of one image at once fetching each blob once, a
//! transfer cut halfway that the next pull resumes, TLS with a custom CA and basic auth.

use crate::common::images::{multi_arch_layout, noise, Compress, Image, Layer};
use crate::common::registry::{Proxy, Registry};

use crate::common::{stderr, stdout, Host};
use serde_json::json;
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::Ordering;

struct PullHost {
    host: Host,
    store: PathBuf,
}

impl PullHost {
    fn new(tag: &str) -> PullHost {
        let host = Host::new(tag);
        let store = host.scratch.path.join("images");
        PullHost { host, store }
    }

    fn cmd(&self) -> std::process::Command {
        let mut c = self.host.cmd();
        c.env("HACONIWA_IMAGE_STORE", &self.store)
            .env("HOME", &self.host.scratch.path);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run haconiwa")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "haconiwa {args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    fn cat_marker(&self, image: &str) -> String {
        let def = self.host.haco_raw(
            "m",
            &format!("haconiwa.define(|c| {{ c.name = \"marker\"; c.image = \"{image}\"; c.namespace.unshare([\"uts\", \"ipc\", \"pid\", \"mount\", \"net\"]); }});"),
        );
        let out = self.run(&["run", def.to_str().unwrap(), "--", "/bin/cat", "/marker"]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    }
}

fn marker_image(m: &str) -> Image {
    Image::new(
        vec![
            (Layer::new().busybox(), Compress::Gzip),
            (Layer::new().file("marker", m.as_bytes()), Compress::Zstd),
        ],
        json!({"Cmd": ["/bin/cat", "/marker"], "Env": ["PATH=/bin"]}),
    )
}

#[test]
fn pulls_from_a_registry_by_tag_digest_and_index_and_two_pulls_at_once_fetch_each_blob_once() {
    let h = PullHost::new("pull-reg");
    let reg = Registry::start(&h.host.scratch.path.join("registry"));
    let layout = h.host.scratch.path.join("web");
    let blobs = marker_image("web").layout(&layout, "web:1");
    reg.push(&layout, "web:1", false, None);
    let reference = format!("{}/web:1", reg.addr);
    // Two pulls of one image at once: each blob comes over once.
    let a = h.cmd().args(["image", "pull", &reference]).spawn().unwrap();
    let b = h.cmd().args(["image", "pull", &reference]).spawn().unwrap();
    for p in [a, b] {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    for (d, _) in &blobs.layers {
        assert_eq!(reg.blob_gets(d), 1, "blob {d} fetched once: {}", reg.log());
    }
    assert_eq!(reg.blob_gets(&blobs.config), 1);
    assert_eq!(h.cat_marker(&reference), "web");
    // By digest: nothing comes over again.
    let digest =
        serde_json::from_str::<serde_json::Value>(&h.ok(&["image", "inspect", &reference]))
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string();
    let by_digest = format!("{}/web@{digest}", reg.addr);
    let out = h.ok(&["image", "pull", &by_digest]);
    assert!(out.contains(&digest), "{out}");
    for (d, _) in &blobs.layers {
        assert_eq!(reg.blob_gets(d), 1);
    }
    // A multi-platform index: this host's platform.
    let mut arm = marker_image("arm64");
    arm.arch = "arm64".into();
    let multi = h.host.scratch.path.join("multi");
    multi_arch_layout(&multi, &[&arm, &marker_image("amd64")], "multi:1");
    // skopeo finds an index by its ref name.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(multi.join("index.json")).unwrap()).unwrap();
    let mut index = index;
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = json!("1");
    std::fs::write(
        multi.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    reg.push(&multi, "multi:1", true, None);
    h.ok(&["image", "pull", &format!("{}/multi:1", reg.addr)]);
    assert_eq!(h.cat_marker(&format!("{}/multi:1", reg.addr)), "amd64");
    // What the registry does not have, in its own words.
    let out = h.run(&["image", "pull", &format!("{}/web:2", reg.addr)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("MANIFEST_UNKNOWN"),
        "{}",
        stderr(&out)
    );
    // A definition naming an image the store lacks: `run` pulls it first.
    let fresh = PullHost::new("pull-run");
    assert_eq!(fresh.cat_marker(&reference), "web");
    // On a terminal, a line per layer and the rate; not on a pipe (above: only the
    // result line).
    crate::common::require_program("script", "util-linux");
    let tty = PullHost::new("pull-tty");
    let out = std::process::Command::new("script")
        .env("HACONIWA_IMAGE_STORE", &tty.store)
        .args([
            "-qec",
            &format!("{} image pull {reference}", crate::common::BIN),
            "/dev/null",
        ])
        .output()
        .unwrap();
    let shown = stdout(&out);
    assert!(out.status.success(), "{shown}{}", stderr(&out));
    for (d, _) in &blobs.layers {
        let short = &d["sha256:".len().."sha256:".len() + 12];
        assert!(shown.contains(short), "a line for layer {short}: {shown}");
    }
    assert!(shown.contains("done") && shown.contains("/s"), "{shown}");
    h.host.assert_clean();
}

#[test]
fn a_pull_cut_halfway_resumes_where_it_broke() {
    let h = PullHost::new("pull-resume");
    let reg = Registry::start(&h.host.scratch.path.join("registry"));
    let layout = h.host.scratch.path.join("big");
    let size = 6 << 20;
    let blobs = Image::new(
        vec![(Layer::new().file("big", &noise(size)), Compress::None)],
        json!({"Cmd": ["/big"]}),
    )
    .layout(&layout, "big:1");
    reg.push(&layout, "big:1", false, None);
    let proxy = Proxy::start(&reg.addr);
    proxy.budget.store(2 << 20, Ordering::SeqCst);
    let reference = format!("{}/big:1", proxy.addr);
    let out = h.run(&["image", "pull", &reference]);
    assert!(!out.status.success(), "the cut pull succeeded");
    assert!(
        stderr(&out).contains("the next pull resumes"),
        "{}",
        stderr(&out)
    );
    let partial: u64 = std::fs::read_dir(h.store.join("ingest"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        partial > 0 && partial < size as u64,
        "a partial download is kept: {partial}"
    );
    assert!(
        h.ok(&["image", "ls", "--json"]).trim() == "[]",
        "nothing half is listed"
    );
    proxy.budget.store(u64::MAX, Ordering::SeqCst);
    proxy.passed.store(0, Ordering::SeqCst);
    proxy.sent.lock().unwrap().clear();
    h.ok(&["image", "pull", &reference]);
    let sent = String::from_utf8_lossy(&proxy.sent.lock().unwrap()).to_lowercase();
    assert!(
        sent.contains(&format!("range: bytes={partial}-")),
        "asked for the rest: {sent}"
    );
    let passed = proxy.passed.load(Ordering::SeqCst);
    assert!(
        passed < size as u64 - partial / 2,
        "resumed, not fetched again: {passed} bytes for a {size}-byte blob of which {partial} were here"
    );
    // skopeo compressed the layer on its way into the registry: the pulled manifest
    // names the blob.
    let inspect: serde_json::Value =
        serde_json::from_str(&h.ok(&["image", "inspect", &reference])).unwrap();
    let layer = inspect["layers"][0]["blob"].as_str().unwrap().to_string();
    assert_ne!(layer, blobs.layers[0].0);
    assert_eq!(
        reg.blob_gets(&layer),
        2,
        "one cut, one resumed: {}",
        reg.log()
    );
    let ingest_left = std::fs::read_dir(h.store.join("ingest")).unwrap().count();
    assert_eq!(ingest_left, 0);
}

#[test]
fn a_registry_with_tls_and_basic_auth() {
    let h = PullHost::new("pull-tls");
    let reg = Registry::start_with(
        &h.host.scratch.path.join("registry"),
        true,
        Some(("alice", "s3cret")),
    );
    let layout = h.host.scratch.path.join("web");
    marker_image("tls").layout(&layout, "web:1");
    reg.push(&layout, "web:1", false, Some(("alice", "s3cret")));
    let reference = format!("{}/web:1", reg.addr);
    let ca = format!("{}={}", reg.addr, reg.ca.as_ref().unwrap().display());
    // Without the CA: the certificate is not trusted (and no plain-HTTP fallback).
    let out = h.run(&["image", "pull", &reference]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("TLS with 127.0.0.1"),
        "{}",
        stderr(&out)
    );
    // With the CA but no credentials.
    let out = h.run(&["image", "pull", &reference, "--registry-ca", &ca]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unauthorized: it wants a user and password"),
        "{}",
        stderr(&out)
    );
    // Wrong credentials, then the right ones, from a docker-format auth file.
    let auth = h.host.scratch.path.join("auth.json");
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    std::fs::write(
        &auth,
        json!({"auths": {reg.addr.clone(): {"auth": b64("alice:wrong")}}}).to_string(),
    )
    .unwrap();
    let with_auth = [
        "image",
        "pull",
        &reference,
        "--registry-ca",
        &ca,
        "--authfile",
        auth.to_str().unwrap(),
    ];
    let out = h.run(&with_auth);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unauthorized with the auth file's credentials"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        &auth,
        json!({"auths": {format!("https://{}", reg.addr): {"auth": b64("alice:s3cret")}}})
            .to_string(),
    )
    .unwrap();
    h.ok(&with_auth);
    assert_eq!(h.cat_marker(&reference), "tls");
    // ~/.docker/config.json is read when no auth file is named.
    let fresh = PullHost::new("pull-tls-home");
    std::fs::create_dir_all(fresh.host.scratch.path.join(".docker")).unwrap();
    std::fs::copy(&auth, fresh.host.scratch.path.join(".docker/config.json")).unwrap();
    fresh.ok(&["image", "pull", &reference, "--registry-ca", &ca]);
}

#[test]
fn a_registry_with_token_auth_as_docker_hub_speaks_it() {
    let h = PullHost::new("pull-token");
    let tokens = crate::common::registry::TokenService::start("bob", "hunter2");
    let reg = Registry::start_with_tokens(&h.host.scratch.path.join("registry"), &tokens);
    let layout = h.host.scratch.path.join("web");
    marker_image("bearer").layout(&layout, "web:1");
    reg.push(&layout, "web:1", false, Some(("bob", "hunter2")));
    let reference = format!("{}/web:1", reg.addr);
    // No credentials: the token service refuses, and says why.
    let issued = tokens.issued.load(Ordering::SeqCst);
    let out = h.run(&["image", "pull", &reference]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the token service said 401")
            && stderr(&out).contains("unknown user or wrong password"),
        "{}",
        stderr(&out)
    );
    // With the user's credentials: a token from the realm, then the image.
    let auth = h.host.scratch.path.join("auth.json");
    std::fs::write(
        &auth,
        json!({"auths": {reg.addr.clone(): {"username": "bob", "password": "hunter2"}}})
            .to_string(),
    )
    .unwrap();
    h.ok(&[
        "image",
        "pull",
        &reference,
        "--authfile",
        auth.to_str().unwrap(),
    ]);
    assert!(
        tokens.issued.load(Ordering::SeqCst) > issued,
        "a token was issued"
    );
    assert_eq!(h.cat_marker(&reference), "bearer");
    assert!(
        reg.log()
            .contains("\"GET /v2/web/manifests/1 HTTP/1.1\" 200"),
        "{}",
        reg.log()
    );
}
