//! Network set-up for a new network namespace: loopback up (inside), and the optional
//! veth pair to a host bridge (from the parent, with iproute2).

use super::error::{Step, StepError, StepResult};
use crate::spec::BridgeNetwork;
use std::process::Command;

/// Brings `lo` up in the current network namespace.
pub fn loopback_up() -> StepResult<()> {
    // SAFETY: plain socket creation; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(StepError::last("socket for loopback set-up"));
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own.
    let mut rc = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) };
    if rc == 0 {
        // SAFETY: ifru_flags is the active union member after SIOCGIFFLAGS.
        unsafe {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
        rc = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) };
    }
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(StepError::os("bring loopback up", err));
    }
    Ok(())
}

fn ip(args: &[&str]) -> StepResult<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .step(|| format!("run ip {}", args.join(" ")))?;
    if !out.status.success() {
        return Err(StepError::msg(
            format!("ip {}", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Host-side name of a container's veth (interface names are at most 15 bytes).
pub fn host_veth_name(pid: i32) -> String {
    format!("hcn{pid}")
}

/// Creates the bridge when missing, a veth pair with one end in the container's network
/// namespace (as `eth0`), addresses it and sets the default route.
pub fn attach_bridge(pid: i32, net: &BridgeNetwork) -> StepResult<()> {
    let br = net.bridge.as_str();
    let exists = Command::new("ip")
        .args(["link", "show", br])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        ip(&["link", "add", br, "type", "bridge"])?;
        if let Some(gw) = &net.gateway {
            let len = net.address.split_once('/').map(|(_, l)| l).unwrap_or("24");
            ip(&["addr", "add", &format!("{gw}/{len}"), "dev", br])?;
        }
    }
    ip(&["link", "set", br, "up"])?;
    let host = host_veth_name(pid);
    let pid_s = pid.to_string();
    ip(&[
        "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &pid_s,
    ])?;
    ip(&["link", "set", &host, "master", br, "up"])?;
    let ns = format!("/proc/{pid}/ns/net");
    let inside = |args: &[&str]| -> StepResult<()> {
        let out = Command::new("nsenter")
            .arg(format!("--net={ns}"))
            .arg("ip")
            .args(args)
            .output()
            .step(|| format!("run nsenter ip {}", args.join(" ")))?;
        if !out.status.success() {
            return Err(StepError::msg(
                format!("ip {} (in the container)", args.join(" ")),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(())
    };
    inside(&["addr", "add", &net.address, "dev", "eth0"])?;
    inside(&["link", "set", "eth0", "up"])?;
    if let Some(gw) = &net.gateway {
        inside(&["route", "add", "default", "via", gw])?;
    }
    Ok(())
}

/// Deletes a host interface (best effort).
pub fn remove_link(name: &str) {
    let _ = Command::new("ip").args(["link", "del", name]).output();
}
