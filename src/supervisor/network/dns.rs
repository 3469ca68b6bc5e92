//! The DNS responder every member runs on its bridge address (port 53, UDP and TCP): the
//! cluster's names answered from this member's copy of the replicated state, every
//! other name forwarded to the host's resolvers (docs/networking.md).
//!
//! - `NAME.service.haconiwa`: A records of the copies of rule or definition NAME that
//!   run and are healthy (all running copies when the definition has no health check);
//!   a copy that ends, is lost or turns unhealthy leaves the answer as soon as that is
//!   applied here (TTL 1 s).
//! - `ID.container.haconiwa`: the container's address while it holds one.
//! - SRV of `NAME.service.haconiwa`: one record per published port of each serving
//!   copy, its target `node-K.node.haconiwa` (the member's address) and its host port.
//!
//! The messages are hickory-proto's (the codec under hickory-server): the answers are a
//! function of the state, with no zone store, so a socket loop is all the server needed.

use super::super::shared::Supervisor;
use crate::cluster::state::{ClusterState, ContainerRecord, Health, Observed};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

/// Services' domain.
pub const SERVICE_DOMAIN: &str = "service.haconiwa";
/// Containers' domain.
pub const CONTAINER_DOMAIN: &str = "container.haconiwa";
/// Members' domain (`node-K.node.haconiwa`: SRV targets).
pub const NODE_DOMAIN: &str = "node.haconiwa";
/// TTL of the cluster's answers, s.
const TTL: u32 = 1;
/// How long a forwarded query may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a copy serves: wanted running (or retiring: it still serves until its
/// replacement does), running, and healthy when it has a check.
pub fn serves(c: &ContainerRecord) -> bool {
    c.desired.keeps_running()
        && match &c.observed {
            Observed::Running { .. } => true,
            Observed::Checked { health, .. } => *health == Health::Healthy,
            _ => false,
        }
}

/// The addresses of the copies of service `name` (a rule's or a definition's name)
/// that serve, in address order.
pub fn service_addresses(state: &ClusterState, name: &str) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = state
        .containers()
        .values()
        .filter(|c| c.rule.as_deref() == Some(name) || c.definition == name)
        .filter(|c| serves(c))
        .filter_map(|c| state.address_of(&c.id))
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// What the cluster answers for `name` (lower case, no trailing dot): None when the
/// name is not the cluster's.
pub fn lookup(state: &ClusterState, name: &str) -> Option<Vec<Ipv4Addr>> {
    if let Some(service) = name.strip_suffix(&format!(".{SERVICE_DOMAIN}")) {
        return Some(service_addresses(state, service));
    }
    if let Some(id) = name.strip_suffix(&format!(".{CONTAINER_DOMAIN}")) {
        return Some(state.address_of(id).into_iter().collect());
    }
    if let Some(node) = name.strip_suffix(&format!(".{NODE_DOMAIN}")) {
        return Some(node_address(state, node).into_iter().collect());
    }
    (name == "haconiwa" || name.ends_with(".haconiwa")).then(Vec::new)
}

/// The address of member `node-K`.
fn node_address(state: &ClusterState, name: &str) -> Option<Ipv4Addr> {
    let id: u64 = name.strip_prefix("node-")?.parse().ok()?;
    let addr = &state.nodes().get(&id)?.addr;
    addr.rsplit_once(':')?.0.parse().ok()
}

/// SRV records of service `name`: each published port of each serving copy, at its
/// node; with the nodes' A records as additionals.
fn srv_records(state: &ClusterState, owner: &Name, name: &str) -> (Vec<Record>, Vec<Record>) {
    use hickory_proto::rr::rdata::SRV;
    let (mut answers, mut extra) = (Vec::new(), Vec::new());
    let mut nodes = std::collections::BTreeSet::new();
    for c in state.containers().values() {
        if !(c.rule.as_deref() == Some(name) || c.definition == name) || !serves(c) {
            continue;
        }
        let Ok(target) = Name::from_ascii(format!("node-{}.{NODE_DOMAIN}.", c.node)) else {
            continue;
        };
        for p in state.ports_of(&c.id) {
            let srv = SRV::new(0, 10, p.host, target.clone());
            answers.push(Record::from_rdata(owner.clone(), TTL, RData::SRV(srv)));
        }
        if !state.ports_of(&c.id).is_empty() && nodes.insert(c.node) {
            if let Some(ip) = node_address(state, &format!("node-{}", c.node)) {
                extra.push(Record::from_rdata(target, TTL, RData::A(ip.into())));
            }
        }
    }
    (answers, extra)
}

/// The answer to one query, or None when it goes to the host's resolvers.
fn answer(state: &ClusterState, query: &Message) -> Option<Message> {
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    let Some(q) = query.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return Some(reply);
    };
    let name = q.name().to_ascii().to_ascii_lowercase();
    let ips = lookup(state, name.trim_end_matches('.'))?;
    reply.metadata.authoritative = true;
    reply.add_query(q.clone());
    if q.query_type() == RecordType::SRV {
        let service = name.trim_end_matches('.');
        if let Some(service) = service.strip_suffix(&format!(".{SERVICE_DOMAIN}")) {
            let (answers, extra) = srv_records(state, q.name(), service);
            reply.add_answers(answers);
            reply.additionals.extend(extra);
            return Some(reply);
        }
    }
    if ips.is_empty() {
        reply.metadata.response_code = ResponseCode::NXDomain;
        return Some(reply);
    }
    if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
        let owner: Name = q.name().clone();
        // Rotated by the query's id: clients that take the first address spread over
        // the copies.
        let mut ips = ips;
        let turn = query.metadata.id as usize % ips.len();
        ips.rotate_left(turn);
        for ip in ips {
            reply.add_answer(Record::from_rdata(owner.clone(), TTL, RData::A(ip.into())));
        }
    }
    Some(reply)
}

/// The host's resolvers (from `/etc/resolv.conf`), to forward other names to.
fn upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Sends a query to the host's resolvers, the first that answers in time.
async fn forward(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(FORWARD_TIMEOUT, sock.recv_from(&mut buf)).await
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// A reply's bytes within `limit` (a UDP client's buffer): answers dropped from the end
/// and the truncation flag set when they do not fit, so the client asks again over
/// TCP, where there is no limit.
fn fit(mut reply: Message, limit: Option<usize>) -> Option<Vec<u8>> {
    loop {
        let bytes = reply.to_vec().ok()?;
        let full = limit.is_some_and(|l| bytes.len() > l);
        if !full || (reply.answers.is_empty() && reply.additionals.is_empty()) {
            return Some(bytes);
        }
        reply.metadata.truncation = true;
        if reply.additionals.pop().is_none() {
            reply.answers.pop();
        }
    }
}

/// The reply to one message: the cluster's answer, or the host's resolvers' (SERVFAIL
/// when none answers); None for what is not a query. `udp`: the reply must fit the
/// client's UDP buffer (512 bytes, or what its EDNS record offers).
async fn respond(
    core: &Supervisor,
    raw: &[u8],
    upstreams: &[SocketAddr],
    udp: bool,
) -> Option<Vec<u8>> {
    let query = Message::from_vec(raw).ok()?;
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let limit = udp.then(|| {
        let edns = query.edns.as_ref().map_or(512, |e| e.max_payload());
        usize::from(edns.max(512))
    });
    let reply = {
        let state = core.feed.state.borrow().1.clone();
        answer(&state, &query)
    };
    if let Some(reply) = reply {
        return fit(reply, limit);
    }
    match forward(raw, upstreams).await {
        Some(bytes) => Some(bytes),
        None => fit(
            Message::error_msg(query.metadata.id, OpCode::Query, ResponseCode::ServFail),
            limit,
        ),
    }
}

/// Binds `address`:53 (retried: the address may still be settling on the bridge).
async fn bind<T>(
    address: Ipv4Addr,
    what: &str,
    bind: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<T>> + Send>>,
) -> T {
    loop {
        match bind().await {
            Ok(s) => return s,
            Err(e) => {
                tracing::warn!("DNS on {address}:53 ({what}): {e}; trying again in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Answers DNS on `address`:53, UDP and TCP, until the process ends.
pub async fn serve(core: Arc<Supervisor>, address: Ipv4Addr) {
    let udp = bind(address, "udp", || Box::pin(UdpSocket::bind((address, 53)))).await;
    let tcp = bind(address, "tcp", || {
        Box::pin(tokio::net::TcpListener::bind((address, 53)))
    })
    .await;
    tracing::info!("DNS: answering {SERVICE_DOMAIN} and {CONTAINER_DOMAIN} on {address}:53");
    let upstreams: Arc<[SocketAddr]> = upstreams().into();
    tokio::spawn(serve_tcp(core.clone(), tcp, upstreams.clone()));
    let sock = Arc::new(udp);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let (core, sock, ups, raw) = (
            core.clone(),
            sock.clone(),
            upstreams.clone(),
            buf[..n].to_vec(),
        );
        tokio::spawn(async move {
            if let Some(bytes) = respond(&core, &raw, &ups, true).await {
                let _ = sock.send_to(&bytes, from).await;
            }
        });
    }
}

/// DNS over TCP: length-prefixed messages, several per connection, each connection
/// closed after 10 s without a query.
async fn serve_tcp(
    core: Arc<Supervisor>,
    listener: tokio::net::TcpListener,
    upstreams: Arc<[SocketAddr]>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let (core, ups) = (core.clone(), upstreams.clone());
        tokio::spawn(async move {
            loop {
                let idle = Duration::from_secs(10);
                let Ok(Ok(len)) = tokio::time::timeout(idle, conn.read_u16()).await else {
                    return;
                };
                let mut raw = vec![0u8; usize::from(len)];
                if conn.read_exact(&mut raw).await.is_err() {
                    return;
                }
                let Some(bytes) = respond(&core, &raw, &ups, false).await else {
                    return;
                };
                let Ok(n) = u16::try_from(bytes.len()) else {
                    return;
                };
                if conn.write_u16(n).await.is_err() || conn.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{Command, Definition, Response};
    use crate::spec::{ContainerSpec, NsKind};
    use std::collections::BTreeMap;

    /// Three members on 10.88.0.0/16; a copy of `web` (rule `front`, port 8080
    /// published) on each, in the given states.
    fn state(observed: &[Observed]) -> (ClusterState, Vec<String>) {
        let mut s = ClusterState::default();
        let mut i = 0;
        let mut next = || {
            i += 1;
            i
        };
        for n in 1..=3 {
            let add = Command::AddNode {
                id: None,
                addr: format!("10.0.0.{n}:7700"),
                labels: BTreeMap::new(),
            };
            s.apply(next(), &add);
        }
        let set = Command::SetNetwork {
            cidr: "10.88.0.0/16".into(),
            subnet_prefix: 24,
        };
        s.apply(next(), &set);
        let mut spec = ContainerSpec::new("web", vec!["/bin/true".into()], "/r".into());
        spec.namespaces.unshare.push(NsKind::Net);
        spec.ports.push(crate::spec::PublishedPort {
            container: 80,
            host: Some(8080),
        });
        let def = Definition {
            name: "web".into(),
            digest: "d-web".into(),
            text: String::new(),
            base_dir: String::new(),
            spec,
            registered_index: 0,
        };
        let mut ids = Vec::new();
        for (k, o) in observed.iter().enumerate() {
            let node = k as u64 + 1;
            let spawn = Command::Spawn {
                digest: "d-web".into(),
                definition: Some(def.clone()),
                nodes: vec![node],
                rule: Some("front".into()),
            };
            let Response::Spawned(new) = s.apply(next(), &spawn).0 else {
                panic!("spawn refused");
            };
            let report = Command::Observe {
                id: new[0].clone(),
                node,
                observed: o.clone(),
            };
            s.apply(next(), &report);
            ids.push(new[0].clone());
        }
        (s, ids)
    }

    fn checked(health: Health) -> Observed {
        Observed::Checked { pid: 7, health }
    }

    #[test]
    fn a_service_answers_with_its_serving_copies_only() {
        let (s, ids) = state(&[
            checked(Health::Healthy),
            checked(Health::Starting),
            checked(Health::Unhealthy),
        ]);
        let ip = |id: &String| s.address_of(id).unwrap();
        // By the rule's name and by the definition's: the healthy copy alone.
        assert_eq!(
            lookup(&s, "front.service.haconiwa"),
            Some(vec![ip(&ids[0])])
        );
        assert_eq!(lookup(&s, "web.service.haconiwa"), Some(vec![ip(&ids[0])]));
        // A container by its id, whatever its health; a member by its name.
        assert_eq!(
            lookup(&s, &format!("{}.container.haconiwa", ids[2])),
            Some(vec![ip(&ids[2])])
        );
        assert_eq!(
            lookup(&s, "node-2.node.haconiwa"),
            Some(vec![Ipv4Addr::new(10, 0, 0, 2)])
        );
        // The cluster's domain knows no other name; other names are not its to answer.
        assert_eq!(lookup(&s, "nope.service.haconiwa"), Some(vec![]));
        assert_eq!(lookup(&s, "x.haconiwa"), Some(vec![]));
        assert_eq!(lookup(&s, "example.com"), None);
    }

    #[test]
    fn copies_without_a_check_serve_while_running_and_srv_names_their_ports() {
        let exited = Observed::Exited {
            code: Some(0),
            oom_killed: false,
            error: None,
        };
        let (s, ids) = state(&[Observed::Running { pid: 7 }, exited, Observed::Starting]);
        let ip = s.address_of(&ids[0]).unwrap();
        assert_eq!(lookup(&s, "front.service.haconiwa"), Some(vec![ip]));
        assert_eq!(
            s.address_of(&ids[1]),
            None,
            "an exited copy gave its address back"
        );
        let owner = Name::from_ascii("front.service.haconiwa.").unwrap();
        let (answers, extra) = srv_records(&s, &owner, "front");
        assert_eq!(answers.len(), 1);
        assert!(
            answers[0]
                .to_string()
                .contains("8080 node-1.node.haconiwa."),
            "{}",
            answers[0]
        );
        assert_eq!(extra.len(), 1);
    }

    #[test]
    fn a_udp_reply_too_large_is_cut_and_marked_truncated() {
        let owner = Name::from_ascii("big.service.haconiwa.").unwrap();
        let mut reply = Message::response(7, OpCode::Query);
        for i in 0..100u8 {
            let rdata = RData::A(Ipv4Addr::new(10, 88, 1, i).into());
            reply.add_answer(Record::from_rdata(owner.clone(), TTL, rdata));
        }
        let cut = fit(reply.clone(), Some(512)).unwrap();
        assert!(cut.len() <= 512);
        let read = Message::from_vec(&cut).unwrap();
        assert!(read.metadata.truncation);
        assert!(!read.answers.is_empty() && read.answers.len() < 100);
        let whole = Message::from_vec(&fit(reply, None).unwrap()).unwrap();
        assert_eq!(
            (whole.answers.len(), whole.metadata.truncation),
            (100, false)
        );
    }
}
