//! The cluster network on hosts as network namespaces (`scripts/hosts`): a container on
//! one host reaches one on another by name (busybox `wget` through the node's DNS
//! responder), over host-gw and over VXLAN; a name follows a copy replaced after its
//! leader's host is killed; spawn/stop churn leaves no address, veth, route or
//! neighbour entry behind, and no two containers ever share an address (read from the
//! containers' interfaces, not from the state).

use crate::common::hosts::Hosts;
use crate::common::{busybox_rootfs, output_text};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The cluster range of these tests (the hosts' own addresses are 10.100-199.x.x).
const CIDR: &str = "10.250.0.0/16";

/// A busybox definition `name` running `script` (sh -c), in its own namespaces.
fn shell_haco(name: &str, script: &str) -> String {
    format!(
        r#"haconiwa.define(|c| {{
    c.name = "{name}";
    c.init_command = ["/bin/sh", "-c", "{script}"];
    c.chroot_to("{}");
    c.namespace.unshare(["uts", "ipc", "pid", "mount", "net"]);
    c.daemonize();
}});
"#,
        busybox_rootfs().display()
    )
}

/// A web server copy that answers its own name, with a 1 MiB file (a transfer larger
/// than a few packets: an MTU too large for the path hangs it).
fn web_haco() -> String {
    shell_haco(
        "web",
        "mkdir -p /www && hostname > /www/index.html && dd if=/dev/zero of=/www/big bs=1024 count=1024 2>/dev/null && exec httpd -f -p 80 -h /www",
    )
}

/// A client to look from (it asks the node's DNS once at its start, so the node's
/// bridge learns its address: churn leaves that entry to clean up).
fn probe_haco() -> String {
    shell_haco(
        "probe",
        "nslookup web.service.haconiwa >/dev/null 2>&1; exec sleep 3600",
    )
}

fn keep_rule(n: usize) -> String {
    format!("haconiwa.watch(|w| {{\n  w.watch(\"cluster\", |event| {{\n    if event.cluster.count(\"web\") < {n} {{ haconiwa.spawn(\"web.haco\"); }}\n  }});\n}});\n")
}

/// Hosts with the cluster network on, in `mode`.
fn hosts(tag: &str, mode: &str) -> Hosts {
    let h = Hosts::up(tag, 3, &["--network-cidr", CIDR, "--network-mode", mode]);
    std::fs::write(h.scratch.path.join("web.haco"), web_haco()).unwrap();
    std::fs::write(h.scratch.path.join("probe.haco"), probe_haco()).unwrap();
    h
}

/// Runs a shell command inside a running container (all its namespaces and its root),
/// bounded by `timeout` (busybox wget's own -T crashes in this build).
fn in_container(pid: i64, script: &str) -> std::process::Output {
    Command::new("timeout")
        .args(["20", "nsenter", "-t", &pid.to_string()])
        .args([
            "-m", "-n", "-u", "-i", "-p", "-r", "-w", "/bin/sh", "-c", script,
        ])
        .output()
        .expect("nsenter")
}

/// The A records `name` answers with, asked from inside the container `pid`.
fn resolve(pid: i64, name: &str) -> BTreeSet<String> {
    let o = in_container(pid, &format!("nslookup -type=a {name}"));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    text.lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .collect()
}

/// The A records of `name`, asked over TCP of host `host`'s responder (its bridge
/// address), from a thread inside that host's network namespace.
fn addresses_over_tcp(h: &Hosts, host: usize, name: &str) -> BTreeSet<String> {
    use std::io::{Read, Write};
    let ns = format!("/run/netns/{}-h{host}", h.hub().trim_end_matches("-hub"));
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for part in name.split('.') {
        query.push(part.len() as u8);
        query.extend_from_slice(part.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let reply = std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&ns).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            // The bridge's address: the gateway of the host's subnet.
            let o = Command::new("ip")
                .args(["-4", "-o", "addr", "show", "haconiwa0"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            let gw = text
                .split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .and_then(|a| a.split('/').next())
                .unwrap()
                .to_string();
            let mut c = std::net::TcpStream::connect((gw.as_str(), 53)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(&(query.len() as u16).to_be_bytes()).unwrap();
            c.write_all(&query).unwrap();
            let mut len = [0u8; 2];
            c.read_exact(&mut len).unwrap();
            let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
            c.read_exact(&mut reply).unwrap();
            reply
        })
        .join()
        .unwrap()
    });
    // Answers: after the header and the question, each A record ends in its 4 bytes.
    let answers = u16::from_be_bytes([reply[6], reply[7]]) as usize;
    let mut at = query.len();
    let mut out = BTreeSet::new();
    for _ in 0..answers {
        at += 2 + 2 + 2 + 4; // name pointer, type, class, ttl
        let rdlen = u16::from_be_bytes([reply[at], reply[at + 1]]) as usize;
        at += 2;
        let ip = &reply[at..at + rdlen];
        out.insert(format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]));
        at += rdlen;
    }
    out
}

fn containers(h: &Hosts) -> Vec<Value> {
    let o = h.cli(&["containers", "--json"]);
    assert!(o.status.success(), "{}", output_text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The running copies of `definition` that are still wanted: one already stopped may
/// still run for a moment (its kill under way), and is not counted.
fn running(h: &Hosts, definition: &str) -> Vec<Value> {
    containers(h)
        .into_iter()
        .filter(|c| {
            c["definition"] == definition && c["state"] == "running" && c["desired"] == "running"
        })
        .collect()
}

/// Polls `probe` every 50 ms until it gives a value; after `timeout` fails with `what`,
/// the probe's last word and the hosts' logs.
fn wait_for<T>(
    h: &Hosts,
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: {last}\n{}",
                h.logs_tail()
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) for `n` running copies of `definition` with addresses.
fn wait_running(h: &Hosts, definition: &str, n: usize, what: &str) -> Vec<Value> {
    wait_for(h, Duration::from_secs(60), what, || {
        let r = running(h, definition);
        if r.len() == n && r.iter().all(|c| c["address"].is_string()) {
            Ok(r)
        } else {
            Err(format!("{n} running {definition} with addresses: {r:#?}"))
        }
    })
}

fn spawn_on(h: &Hosts, file: &str, node: u64) {
    let path = h.scratch.path.join(file);
    let o = h.cli(&["spawn", path.to_str().unwrap(), "--node", &node.to_string()]);
    assert!(o.status.success(), "spawn {file}: {}", output_text(&o));
}

/// Every running container's eth0 addresses, read from its interface.
fn interface_addresses(h: &Hosts) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for c in containers(h).iter().filter(|c| c["state"] == "running") {
        let pid = c["pid"].as_i64().unwrap();
        let o = Command::new("nsenter")
            .args([
                "-t",
                &pid.to_string(),
                "-n",
                "ip",
                "-4",
                "-o",
                "addr",
                "show",
                "eth0",
            ])
            .output()
            .unwrap();
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some(a) = l.split_whitespace().skip_while(|w| *w != "inet").nth(1) {
                out.push((c["id"].as_str().unwrap().to_string(), a.to_string()));
            }
        }
    }
    out
}

/// A probe on `from` reaches the web copy on `to` by its container name and by the
/// service name, and fetches 1 MiB from it.
fn reaches_across(h: &Hosts, probe_pid: i64, web: &Value) {
    let id = web["id"].as_str().unwrap();
    let o = in_container(
        probe_pid,
        &format!("wget -qO- http://{id}.container.haconiwa/ && wget -qO- http://{id}.container.haconiwa/big | wc -c"),
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success() && text.contains(id) && text.contains("1048576"),
        "the probe reaches {id} by name and fetches 1 MiB: {}\n{}",
        output_text(&o),
        h.logs_tail()
    );
}

fn the_network_carries_names_and_replacements(mode: &str) {
    let h = hosts(&format!("net-{mode}"), mode);
    let leader = h.leader();
    // The probe on a member that is not the leader: it outlives the leader's host.
    let probe_node = (1..=3).find(|k| *k != leader).unwrap();
    spawn_on(&h, "probe.haco", probe_node);
    let rule = h.scratch.path.join("web.watch");
    std::fs::write(&rule, keep_rule(3)).unwrap();
    let o = h.cli(&["watch", "apply", rule.to_str().unwrap()]);
    assert!(o.status.success(), "{}", output_text(&o));
    let webs = wait_running(&h, "web", 3, "three copies");
    let probe = wait_running(&h, "probe", 1, "the probe")[0].clone();
    let probe_pid = probe["pid"].as_i64().unwrap();

    // Addresses of each host's subnet, distinct, read from the interfaces.
    let ifs = interface_addresses(&h);
    let addrs: BTreeSet<&String> = ifs.iter().map(|(_, a)| a).collect();
    assert_eq!(addrs.len(), ifs.len(), "no address twice: {ifs:?}");
    assert_eq!(ifs.len(), 4, "every container has its address: {ifs:?}");

    // VXLAN: the containers' MTU leaves room for the encapsulation.
    if mode == "vxlan" {
        let o = in_container(probe_pid, "cat /sys/class/net/eth0/mtu");
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1450");
    }

    // Across hosts by name, a copy on every other host.
    for web in webs.iter().filter(|w| w["node"] != probe["node"]) {
        reaches_across(&h, probe_pid, web);
    }
    let served: BTreeSet<String> = webs
        .iter()
        .map(|w| w["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(resolve(probe_pid, "web.service.haconiwa"), served);
    // Other names of the cluster's domain: no such name.
    assert!(resolve(probe_pid, "nothing.service.haconiwa").is_empty());
    // Beyond the range: the hub is no member and has no route back to the range; the
    // probe's traffic leaves masqueraded behind its host's address.
    let hub = format!("{}.254", h.net());
    let o = in_container(probe_pid, &format!("ping -c 1 -W 3 {hub}"));
    assert!(
        o.status.success(),
        "the probe reaches {hub}: {}",
        output_text(&o)
    );
    // The same over TCP, from the probe's host.
    let probe_host = probe["node"].as_u64().unwrap() as usize;
    let gateway = addresses_over_tcp(&h, probe_host, "web.service.haconiwa");
    assert_eq!(gateway, served, "DNS over TCP answers as UDP does");

    // The leader's host dies; its copy is replaced elsewhere; the name follows.
    let on_leader: Vec<String> = webs
        .iter()
        .filter(|w| w["node"] == leader)
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !on_leader.is_empty(),
        "placement spreads: a copy on the leader"
    );
    h.script(&["kill", &leader.to_string()]);
    let replaced = wait_for(
        &h,
        Duration::from_secs(60),
        "the leader's copy replaced",
        || {
            let r = running(&h, "web");
            let fresh = r.iter().any(|c| !webs.iter().any(|w| w["id"] == c["id"]));
            if r.len() == 3 && fresh && !r.iter().any(|c| c["node"] == leader) {
                Ok(r)
            } else {
                Err(format!("{r:#?}"))
            }
        },
    );
    let t0 = Instant::now();
    let want: BTreeSet<String> = replaced
        .iter()
        .map(|w| w["address"].as_str().unwrap().to_string())
        .collect();
    let mut seen = BTreeSet::new();
    while t0.elapsed() < Duration::from_secs(10) {
        seen = resolve(probe_pid, "web.service.haconiwa");
        if seen == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = t0.elapsed();
    assert_eq!(seen, want, "the name answers with the copies that run now");
    assert!(
        took < Duration::from_secs(1),
        "the name followed the replacement in {took:?} (promise: within a second)"
    );
    let fresh = replaced
        .iter()
        .find(|c| !webs.iter().any(|w| w["id"] == c["id"]))
        .unwrap();
    if fresh["node"] != probe["node"] {
        reaches_across(&h, probe_pid, fresh);
    }
    eprintln!("{mode}: the name followed the replacement {took:?} after it ran");

    // The dead host leaves the cluster: its subnet's routes (and VXLAN entries) go on
    // every other host.
    let o = h.cli(&["cluster", "leave", &leader.to_string()]);
    assert!(o.status.success(), "leave: {}", output_text(&o));
    let others: Vec<usize> = (1..=3).filter(|k| *k as u64 != leader).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<(usize, usize, usize)> = others
            .iter()
            .map(|k| {
                let ip = |args: &[&str]| ip_on(&h, *k, args).lines().count();
                let vx = if mode == "vxlan" {
                    ip(&["neigh", "show", "dev", "haconiwa-vx"])
                } else {
                    1
                };
                (*k, ip(&["route", "show", "proto", "104"]), vx)
            })
            .collect();
        if left.iter().all(|(_, routes, vx)| *routes == 1 && *vx == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "routes (and VXLAN neighbours) to the member that left, per host: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn host_gw_reaches_across_hosts_by_name_and_the_name_follows_a_replacement() {
    the_network_carries_names_and_replacements("host-gw");
}

#[test]
fn vxlan_reaches_across_hosts_by_name_and_the_name_follows_a_replacement() {
    the_network_carries_names_and_replacements("vxlan");
}

/// `ip ARGS` in host `host`'s network namespace: its output.
fn ip_on(h: &Hosts, host: usize, args: &[&str]) -> String {
    let ns = format!("/run/netns/{}-h{host}", h.hub().trim_end_matches("-hub"));
    let o = Command::new("nsenter")
        .arg(format!("--net={ns}"))
        .arg("ip")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Per host: the containers' veths, routes marked by haconiwa, and the routes to
/// container addresses and neighbour entries of the range that name no live container.
fn kernel_leftovers(
    h: &Hosts,
    live: &BTreeSet<String>,
) -> BTreeMap<usize, (usize, usize, Vec<String>)> {
    let mut out = BTreeMap::new();
    for k in 1..=h.n {
        let ip = |args: &[&str]| ip_on(h, k, args);
        let veths = ip(&["-o", "link", "show", "type", "veth"])
            .lines()
            .filter(|l| l.contains(": hcn"))
            .count();
        let routes = ip(&["route", "show", "proto", "104"]).lines().count();
        let first = |l: &str| l.split_whitespace().next().map(String::from);
        let mut stray: Vec<String> = ip(&["route", "show", "scope", "link"])
            .lines()
            .filter(|l| l.contains(" dev hcn"))
            .filter_map(first)
            .collect();
        stray.extend(
            ip(&["neigh", "show"])
                .lines()
                .filter(|l| l.starts_with(CIDR.trim_end_matches("0.0/16")))
                .filter(|l| !l.contains("dev haconiwa-vx"))
                .filter_map(first),
        );
        stray.retain(|a| !live.contains(a));
        out.insert(k, (veths, routes, stray));
    }
    out
}

#[test]
fn spawn_stop_churn_leaves_no_address_interface_route_or_neighbour_behind() {
    let h = hosts("net-churn", "host-gw");
    let cycles: usize = std::env::var("HACONIWA_NET_CHURN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // One web copy stays on every host: what a live container holds stays.
    for k in 1..=3 {
        spawn_on(&h, "web.haco", k);
    }
    let anchors = wait_running(&h, "web", 3, "the web copies");
    let live: BTreeSet<String> = anchors
        .iter()
        .map(|c| c["address"].as_str().unwrap().to_string())
        .collect();
    let probe = h.scratch.path.join("probe.haco");
    let probe = probe.to_str().unwrap();
    // Batches of 20 spawned at once, checked for distinct addresses on their
    // interfaces, then stopped at once.
    let mut done = 0;
    let mut max_seen = 0;
    while done < cycles {
        let batch = 20.min(cycles - done);
        let spawns: Vec<_> = (0..batch)
            .map(|_| {
                let mut c = h.in_hub(crate::common::BIN);
                c.args(["spawn", probe]).envs(hub_env(&h));
                c.stdout(Stdio::piped()).stderr(Stdio::piped());
                c.spawn().unwrap()
            })
            .collect();
        for s in spawns {
            let o = s.wait_with_output().unwrap();
            assert!(o.status.success(), "spawn: {}", output_text(&o));
        }
        let r = wait_running(&h, "probe", batch, "a batch running");
        let ifs = interface_addresses(&h);
        let distinct: BTreeSet<&String> = ifs.iter().map(|(_, a)| a).collect();
        assert_eq!(distinct.len(), ifs.len(), "no address twice: {ifs:?}");
        max_seen = max_seen.max(ifs.len() - anchors.len());
        let stops: Vec<_> = r
            .iter()
            .map(|c| {
                let mut s = h.in_hub(crate::common::BIN);
                s.args(["stop", c["id"].as_str().unwrap()])
                    .envs(hub_env(&h));
                s.stdout(Stdio::piped()).stderr(Stdio::piped());
                s.spawn().unwrap()
            })
            .collect();
        for s in stops {
            let o = s.wait_with_output().unwrap();
            assert!(o.status.success(), "stop: {}", output_text(&o));
        }
        done += batch;
    }
    // Every probe ended: the state holds the web copies' addresses only, the hosts
    // their veths, no stray route or neighbour, and only the routes to the other members.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held = containers(&h)
            .iter()
            .filter(|c| c["address"].is_string())
            .count();
        let left = kernel_leftovers(&h, &live);
        let clean = left
            .values()
            .all(|(v, r, s)| *v == 1 && *r == 2 && s.is_empty());
        if held == anchors.len() && clean {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {cycles} cycles: {held} addresses held, kernel (veths, routes, stray neighbours) {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(max_seen, 20);
    let o = h.cli(&["services", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["cidr"], CIDR);
}

/// The CLI's environment for commands run in the hub directly (server list, token).
fn hub_env(h: &Hosts) -> Vec<(String, String)> {
    let env = std::fs::read_to_string(h.scratch.path.join("hosts/env")).unwrap();
    env.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A web server publishing its port 80 on port 8080 of its node, and again on a port
/// the cluster picks.
fn site_haco() -> String {
    web_haco()
        .replace("c.name = \"web\";", "c.name = \"site\";")
        .replace(
            "c.daemonize();",
            "c.publish(#{ container: 80, host: 8080 });\n    c.publish(#{ container: 80 });\n    c.daemonize();",
        )
}

#[test]
fn a_published_port_answers_from_the_host_namespace_and_is_never_held_twice() {
    let h = hosts("net-ports", "host-gw");
    std::fs::write(h.scratch.path.join("site.haco"), site_haco()).unwrap();
    spawn_on(&h, "site.haco", 1);
    let site = wait_running(&h, "site", 1, "the site")[0].clone();
    let id = site["id"].as_str().unwrap().to_string();
    let ports: Vec<String> = site["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ports.len(), 2, "{site:#}");
    assert_eq!(ports[0], "8080->80/tcp");
    let dynamic = ports[1].split("->").next().unwrap().to_string();
    let net = h.net();
    let ns = format!("/run/netns/{}-h1", h.hub().trim_end_matches("-hub"));
    // From host 1's own namespace, on loopback, and from the hub, on its address.
    let fetch = |in_ns: &str, url: &str| {
        let o = Command::new("timeout")
            .args([
                "10",
                "nsenter",
                &format!("--net={in_ns}"),
                "busybox",
                "wget",
                "-qO-",
                url,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let hub = format!("/run/netns/{}", h.hub());
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetch(&ns, "http://127.0.0.1:8080/") != id {
        assert!(
            Instant::now() < deadline,
            "port 8080 of host 1 answers\n{}",
            h.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(fetch(&hub, &format!("http://{net}.1:8080/")), id);
    assert_eq!(fetch(&hub, &format!("http://{net}.1:{dynamic}/")), id);
    // The same fixed port on the same node: refused, with the reason.
    let path = h.scratch.path.join("site.haco");
    let o = h.cli(&["spawn", path.to_str().unwrap(), "--node", "1"]);
    assert!(!o.status.success());
    assert!(output_text(&o).contains("8080"), "{}", output_text(&o));
    // Placement goes where the port is free: the two other nodes, then nowhere.
    for _ in 0..2 {
        let o = h.cli(&["spawn", path.to_str().unwrap()]);
        assert!(o.status.success(), "{}", output_text(&o));
    }
    let all = wait_running(&h, "site", 3, "three sites");
    let nodes: BTreeSet<u64> = all.iter().map(|c| c["node"].as_u64().unwrap()).collect();
    assert_eq!(nodes.len(), 3, "one per node: {all:#?}");
    let o = h.cli(&["spawn", path.to_str().unwrap()]);
    assert!(
        !o.status.success(),
        "a fourth copy has no node with port 8080 free"
    );
    assert!(output_text(&o).contains("8080"), "{}", output_text(&o));
    // SRV records name the nodes and ports.
    let o = in_container(
        site["pid"].as_i64().unwrap(),
        "nslookup -type=srv site.service.haconiwa",
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    for k in 1..=3 {
        assert!(
            text.contains(&format!("8080 node-{k}.node.haconiwa")),
            "SRV of every copy's port 8080: {text}"
        );
    }
    // Stopped: the port is closed and given back.
    let o = h.cli(&["stop", &id]);
    assert!(o.status.success(), "{}", output_text(&o));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fetch(&ns, "http://127.0.0.1:8080/").is_empty() {
        assert!(Instant::now() < deadline, "port 8080 closed after the stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}
