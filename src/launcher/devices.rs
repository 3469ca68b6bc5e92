//! Which device nodes a container may create (mknod), read and write: Docker's allowlist
//! (null, zero, full, random, urandom, tty, ptmx and the pts) plus the definition's
//! `devices.allow`; everything else is refused by the kernel. On cgroup v1 through the
//! `devices` controller; on cgroup v2, which has no such controller, through an eBPF
//! program of type `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the container's cgroup,
//! as runc and systemd do.

use super::error::{Step, StepError, StepResult};
use crate::spec::DeviceAllow;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// What a rule lets through: `c` or `b` (or both), major, minor (`None` = any), access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `'c'`, `'b'` or `'a'` (both).
    pub kind: char,
    /// Major number, `None` for any.
    pub major: Option<u32>,
    /// Minor number, `None` for any.
    pub minor: Option<u32>,
    /// Bits of [`READ`], [`WRITE`], [`MKNOD`].
    pub access: u32,
}

/// mknod(2) of the device (the kernel's `BPF_DEVCG_ACC_MKNOD`).
pub const MKNOD: u32 = 1;
/// open for reading (`BPF_DEVCG_ACC_READ`).
pub const READ: u32 = 2;
/// open for writing (`BPF_DEVCG_ACC_WRITE`).
pub const WRITE: u32 = 4;
const RWM: u32 = READ | WRITE | MKNOD;

/// Docker's default device allowlist (without `tun`, which a container asks for).
pub const DEFAULT_RULES: [Rule; 8] = [
    Rule::chr(1, Some(3)), // null
    Rule::chr(1, Some(5)), // zero
    Rule::chr(1, Some(7)), // full
    Rule::chr(1, Some(8)), // random
    Rule::chr(1, Some(9)), // urandom
    Rule::chr(5, Some(0)), // tty
    Rule::chr(5, Some(2)), // ptmx
    Rule::chr(136, None),  // pts
];

impl Rule {
    const fn chr(major: u32, minor: Option<u32>) -> Rule {
        Rule {
            kind: 'c',
            major: Some(major),
            minor,
            access: RWM,
        }
    }

    /// The cgroup v1 `devices.allow` line, e.g. `c 136:* rwm`.
    pub fn v1_line(&self) -> String {
        let n = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_else(|| "*".into());
        let mut acc = String::new();
        for (bit, c) in [(READ, 'r'), (WRITE, 'w'), (MKNOD, 'm')] {
            if self.access & bit != 0 {
                acc.push(c);
            }
        }
        format!("{} {}:{} {acc}", self.kind, n(self.major), n(self.minor))
    }
}

/// A host device node's type and numbers.
pub fn node(path: &Path) -> StepResult<(char, u32, u32)> {
    let md = std::fs::metadata(path).step(|| format!("device {}", path.display()))?;
    let ft = md.file_type();
    let kind = if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else {
        return Err(StepError::msg(
            format!("device {}", path.display()),
            "not a device node",
        ));
    };
    use std::os::unix::fs::MetadataExt;
    let rdev = md.rdev();
    Ok((kind, libc::major(rdev), libc::minor(rdev)))
}

/// The container's whole allowlist: the defaults and the definition's additions (device
/// paths resolved on this host).
pub fn rules(extra: &[DeviceAllow]) -> StepResult<Vec<Rule>> {
    let mut out = DEFAULT_RULES.to_vec();
    for d in extra {
        let access = d.access.chars().fold(0, |acc, c| {
            acc | match c {
                'r' => READ,
                'w' => WRITE,
                'm' => MKNOD,
                _ => 0,
            }
        });
        let rule = match &d.path {
            // Described in full (an OCI config's device): the host need not have it.
            Some(_) if d.mode.is_some() && d.major.is_some() && d.minor.is_some() => Rule {
                kind: match d.kind {
                    Some('b') => 'b',
                    _ => 'c',
                },
                major: d.major,
                minor: d.minor,
                access,
            },
            Some(p) => {
                let (kind, major, minor) = node(Path::new(p))?;
                Rule {
                    kind,
                    major: Some(major),
                    minor: Some(minor),
                    access,
                }
            }
            None => Rule {
                kind: d.kind.unwrap_or('a'),
                major: d.major,
                minor: d.minor,
                access,
            },
        };
        out.push(rule);
    }
    Ok(out)
}

/// Applies the allowlist in a v1 `devices` cgroup: deny all, then allow each rule.
pub fn apply_v1(dir: &Path, rules: &[Rule]) -> StepResult<()> {
    let write = |file: &str, line: &str| {
        std::fs::write(dir.join(file), line)
            .step(|| format!("write {} = {line}", dir.join(file).display()))
    };
    write("devices.deny", "a")?;
    for r in rules {
        write("devices.allow", &r.v1_line())?;
    }
    Ok(())
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// `r{dst} = *(u32 *)(r{src} + off)`.
const fn load_word(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x61, dst, src, off, 0)
}
/// 32-bit `r{dst} &= imm`.
const fn and_imm(dst: u8, imm: i32) -> Insn {
    insn(0x54, dst, 0, 0, imm)
}
/// 32-bit `r{dst} >>= imm`.
const fn rsh_imm(dst: u8, imm: i32) -> Insn {
    insn(0x74, dst, 0, 0, imm)
}
/// `r{dst} = r{src}`.
const fn mov_reg(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
/// `r{dst} = imm`.
const fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
/// `if r{dst} != imm goto +off`.
const fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x55, dst, 0, off, imm)
}
const EXIT: Insn = insn(0x95, 0, 0, 0, 0);

/// The device program: registers r2 = device type, r3 = access, r4 = major,
/// r5 = minor; one block per rule that returns 1 (allow) when everything matches and
/// falls through to the next otherwise; 0 (deny) at the end.
fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        load_word(2, 1, 0),
        and_imm(2, 0xffff),
        load_word(3, 1, 0),
        rsh_imm(3, 16),
        load_word(4, 1, 4),
        load_word(5, 1, 8),
    ];
    for r in rules {
        // Each check jumps over the rest of its block on a mismatch.
        let mut checks: Vec<(u8, i32)> = Vec::new();
        match r.kind {
            'c' => checks.push((2, 2)),
            'b' => checks.push((2, 1)),
            _ => {}
        }
        let mut block: Vec<Insn> = Vec::new();
        let mut jumps: Vec<usize> = Vec::new();
        for (reg, val) in checks {
            jumps.push(block.len());
            block.push(jne_imm(reg, val, 0));
        }
        if r.access & RWM != RWM {
            // Anything asked beyond the allowed access is a mismatch.
            block.push(mov_reg(1, 3));
            block.push(and_imm(1, (!r.access & RWM) as i32));
            jumps.push(block.len());
            block.push(jne_imm(1, 0, 0));
        }
        for (reg, val) in [(4u8, r.major), (5u8, r.minor)] {
            if let Some(v) = val {
                jumps.push(block.len());
                block.push(jne_imm(reg, v as i32, 0));
            }
        }
        block.push(mov_imm(0, 1));
        block.push(EXIT);
        let len = block.len();
        for j in jumps {
            block[j].off = (len - j - 1) as i16;
        }
        p.extend(block);
    }
    p.push(mov_imm(0, 0));
    p.push(EXIT);
    p
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to the fields used.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// Loads the device program for `rules` and attaches it to the cgroup v2 directory
/// `cgroup_dir`, where it stays until the cgroup is removed.
pub fn attach_v2(cgroup_dir: &Path, rules: &[Rule]) -> StepResult<()> {
    let insns = program(rules);
    let license = b"Apache-2.0\0";
    let mut log = vec![0u8; 4096];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    attr.prog_name[..8].copy_from_slice(b"haconiwa");
    // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; the instruction,
    // license and log buffers it points to outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &mut attr as *mut ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let text = String::from_utf8_lossy(&log);
        let text = text.trim_end_matches('\0').trim();
        return Err(StepError {
            step: "load the cgroup v2 device program".into(),
            errno: err.raw_os_error(),
            detail: (!text.is_empty()).then(|| text.lines().last().unwrap_or("").to_string()),
        });
    }
    // SAFETY: bpf() returned a new descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let dir =
        std::fs::File::open(cgroup_dir).step(|| format!("open cgroup {}", cgroup_dir.display()))?;
    let attach = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attach` is a valid bpf_attr prefix of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attach as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if rc != 0 {
        return Err(StepError::last(format!(
            "attach the device program to {}",
            cgroup_dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines() {
        assert_eq!(DEFAULT_RULES[0].v1_line(), "c 1:3 rwm");
        assert_eq!(DEFAULT_RULES[7].v1_line(), "c 136:* rwm");
        let r = rules(&[DeviceAllow {
            path: None,
            kind: Some('b'),
            major: Some(8),
            minor: None,
            access: "r".into(),
            mode: None,
            owner: None,
        }])
        .unwrap();
        assert_eq!(r.last().unwrap().v1_line(), "b 8:* r");
    }

    /// Runs a device program as the kernel would on a `bpf_cgroup_dev_ctx` (`access_type`
    /// = access << 16 | type, major, minor): a small interpreter of the eBPF
    /// instructions `program` emits, refusing any other and any jump out of the program.
    fn run(p: &[Insn], kind: char, major: u32, minor: u32, access: u32) -> u64 {
        const CTX: u64 = 0x1000;
        let dev_type: u32 = match kind {
            'b' => 1,
            'c' => 2,
            other => panic!("device type {other}"),
        };
        let ctx = [(access << 16) | dev_type, major, minor];
        let mut r = [0u64; 11];
        r[1] = CTX;
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = p
                .get(pc)
                .copied()
                .unwrap_or_else(|| panic!("pc {pc} out of the program"));
            let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                0x61 => {
                    let at = r[src] as i64 + i.off as i64 - CTX as i64;
                    assert!((0..12).contains(&at) && at % 4 == 0, "load at {at}");
                    r[dst] = ctx[at as usize / 4] as u64;
                }
                0x54 => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                0x74 => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                0xbf => r[dst] = r[src],
                0xb7 => r[dst] = i.imm as i64 as u64,
                0x55 => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc = (pc as i64 + i.off as i64) as usize;
                    }
                }
                0x95 => return r[0],
                other => panic!("opcode {other:#x}"),
            }
        }
        panic!("the program did not end")
    }

    /// Asserts the program's verdict on each (type, major, minor, access, allowed).
    fn verdicts(p: &[Insn], cases: &[(char, u32, u32, u32, bool)]) {
        for &(kind, major, minor, access, allowed) in cases {
            assert_eq!(
                run(p, kind, major, minor, access) == 1,
                allowed,
                "{kind} {major}:{minor} access {access}"
            );
        }
    }

    #[test]
    fn the_default_program_lets_through_exactly_docker_s_devices() {
        let rw = READ | WRITE;
        verdicts(
            &program(&DEFAULT_RULES),
            &[
                ('c', 1, 3, rw, true),    // /dev/null
                ('c', 1, 3, MKNOD, true), // mknod of it
                ('c', 1, 9, READ, true),  // urandom
                ('c', 5, 2, rw, true),    // ptmx
                ('c', 136, 7, rw, true),  // any pts
                ('c', 136, 0, MKNOD, true),
                ('c', 1, 1, READ, false),  // /dev/mem
                ('c', 1, 4, rw, false),    // /dev/port
                ('c', 5, 1, rw, false),    // the host's console
                ('b', 1, 3, READ, false),  // a block device of null's numbers
                ('b', 8, 0, rw, false),    // sda
                ('c', 10, 200, rw, false), // tun, not by default
                ('c', 4, 0, rw, false),    // tty0
            ],
        );
    }

    #[test]
    fn a_rule_s_access_type_and_wildcards_hold_in_the_program() {
        let allow = |kind, major, minor, access: &str| DeviceAllow {
            path: None,
            kind: Some(kind),
            major: Some(major),
            minor,
            access: access.into(),
            mode: None,
            owner: None,
        };
        let all = rules(&[allow('b', 8, None, "r"), allow('a', 250, Some(1), "rw")]).unwrap();
        verdicts(
            &program(&all),
            &[
                ('b', 8, 0, READ, true),
                ('b', 8, 17, READ, true),
                ('b', 8, 0, WRITE, false),
                ('b', 8, 0, READ | MKNOD, false),
                ('c', 8, 0, READ, false),
                ('b', 9, 0, READ, false),
                // 'a': both types, but not mknod.
                ('c', 250, 1, READ | WRITE, true),
                ('b', 250, 1, WRITE, true),
                ('c', 250, 1, MKNOD, false),
                ('c', 250, 2, READ, false),
                // The defaults come first in the list.
                ('c', 1, 3, READ, true),
            ],
        );
    }
}
