//! Networking inside a new network namespace.

use super::*;
use crate::spec::script::{as_string, bool_of, check_keys, dsl_error, RhaiResult};
use rhai::{Engine, Map};

/// Registers `network(...)`.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("network", |c: &mut Container, o: Map| -> RhaiResult<()> {
        check_keys(
            &o,
            "network",
            &["loopback", "bridge", "address", "gateway", "cluster"],
        )?;
        let mut net = Network::default();
        if let Some(v) = o.get("loopback") {
            net.loopback = bool_of(v, "network loopback")?;
        }
        if let Some(v) = o.get("cluster") {
            net.cluster = bool_of(v, "network cluster")?;
        }
        let s = |k: &str| {
            o.get(k)
                .map(|v| as_string(v, &format!("network {k}")))
                .transpose()
        };
        if let Some(bridge) = s("bridge")? {
            let address = s("address")?.ok_or_else(|| {
                dsl_error("network: a bridge needs an 'address' such as 10.0.5.2/24")
            })?;
            validate_cidr(&address)?;
            let gateway = s("gateway")?;
            if let Some(g) = &gateway {
                g.parse::<std::net::Ipv4Addr>().map_err(|_| {
                    dsl_error(format!("network gateway: '{g}' is not an IPv4 address"))
                })?;
            }
            if bridge.is_empty() || bridge.len() > 15 {
                return Err(dsl_error(format!(
                    "network bridge: invalid interface name '{bridge}'"
                )));
            }
            net.bridge = Some(BridgeNetwork {
                bridge,
                address,
                gateway,
                routed: false,
            });
        }
        let mut d = c.d.borrow_mut();
        if !d.spec.namespaces.unshare.contains(&NsKind::Net) {
            d.spec.namespaces.unshare.push(NsKind::Net);
        }
        d.spec.network = net;
        Ok(())
    });
}

/// Registers `publish(#{ container, host })`.
pub(super) fn register_publish(engine: &mut Engine) {
    engine.register_fn("publish", |c: &mut Container, o: Map| -> RhaiResult<()> {
        check_keys(&o, "publish", &["container", "host"])?;
        let port = |k: &str| -> RhaiResult<Option<u16>> {
            let Some(v) = o.get(k) else {
                return Ok(None);
            };
            let n = v
                .as_int()
                .map_err(|_| dsl_error(format!("publish {k}: a port number, not {v}")))?;
            u16::try_from(n)
                .ok()
                .filter(|p| *p > 0)
                .map(Some)
                .ok_or_else(|| dsl_error(format!("publish {k}: {n} is not a port (1-65535)")))
        };
        let container = port("container")?
            .ok_or_else(|| dsl_error("publish: 'container' (the container's port) is required"))?;
        let host = port("host")?;
        let mut d = c.d.borrow_mut();
        if let Some(h) = host {
            if d.spec.ports.iter().any(|p| p.host == Some(h)) {
                return Err(dsl_error(format!(
                    "publish: host port {h} is published twice"
                )));
            }
        }
        d.spec.ports.push(PublishedPort { container, host });
        Ok(())
    });
}

fn validate_cidr(s: &str) -> RhaiResult<()> {
    let ok = s
        .split_once('/')
        .map(|(ip, len)| {
            ip.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32)
        })
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(dsl_error(format!(
            "network address: '{s}' is not IPv4 CIDR such as 10.0.5.2/24"
        )))
    }
}
