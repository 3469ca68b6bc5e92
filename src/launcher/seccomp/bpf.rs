//! A classic-BPF program for one seccomp filter: "these syscalls (under these argument
//! conditions) get `matched`, every other one gets `mismatch`". The syscall numbers are
//! cut into ranges of one answer each and the range found by a binary search: a few
//! comparisons per call rather than one per listed syscall, and a short program, which
//! is what the kernel's install cost (translation, JIT, its per-syscall cache) grows
//! with.
//!
//! Conditional jumps only ever go to the next instruction or skip one; anything farther
//! goes through an unconditional `ja` (32-bit offset), so no program size overflows the
//! 8-bit conditional offsets.

use std::collections::BTreeMap;

/// `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARGS: u32 = 16;

/// `AUDIT_ARCH_X86_64`, `AUDIT_ARCH_AARCH64`, `AUDIT_ARCH_RISCV64`.
fn audit_arch() -> Option<u32> {
    match std::env::consts::ARCH {
        "x86_64" => Some(0xc000_003e),
        "aarch64" => Some(0xc000_00b7),
        "riscv64" => Some(0xc000_00f3),
        _ => None,
    }
}

/// A comparison of one argument with a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<` (unsigned)
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `(arg & mask) == value`
    MaskedEq(u64),
}

/// One condition: `args[index] CMP value`, on the low 32 bits only when `wide` is false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// Argument index, 0-5.
    pub index: u8,
    /// The comparison.
    pub cmp: Cmp,
    /// The value compared with.
    pub value: u64,
    /// Compare all 64 bits (else the low 32: `int` arguments).
    pub wide: bool,
}

/// What the filter says for one syscall: always `matched`, or `matched` when any of
/// these conjunctions of conditions holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Unconditionally.
    Always,
    /// When one of the alternatives holds (each a list of conditions, all required).
    When(Vec<Vec<Cond>>),
}

impl Entry {
    /// Adds an alternative (`None`: unconditional, which absorbs everything).
    pub fn add(&mut self, alt: Option<Vec<Cond>>) {
        match (self, alt) {
            (Entry::Always, _) => {}
            (e @ Entry::When(_), None) => *e = Entry::Always,
            (Entry::When(v), Some(c)) => v.push(c),
        }
    }
}

/// A program under construction: instructions and `ja` to labels fixed at the end.
#[derive(Default)]
struct Asm {
    code: Vec<SockFilter>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, usize)>,
}

impl Asm {
    fn op(&mut self, code: u16, k: u32) {
        self.code.push(SockFilter {
            code,
            jt: 0,
            jf: 0,
            k,
        });
    }
    fn ret(&mut self, action: u32) {
        self.op(RET_K, action);
    }
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn place(&mut self, l: usize) {
        self.labels[l] = Some(self.code.len());
    }
    fn ja(&mut self, l: usize) {
        self.fixups.push((self.code.len(), l));
        self.op(JA, 0);
    }
    /// `if (A <jmp> k) == when { goto l }`: a short test over a `ja`.
    fn jump_if(&mut self, jmp: u16, k: u32, when: bool, l: usize) {
        let (jt, jf) = if when { (0, 1) } else { (1, 0) };
        self.code.push(SockFilter {
            code: jmp,
            jt,
            jf,
            k,
        });
        self.ja(l);
    }
    /// `if (A <jmp> k) == when { return action }`.
    fn ret_if(&mut self, jmp: u16, k: u32, when: bool, action: u32) {
        let (jt, jf) = if when { (0, 1) } else { (1, 0) };
        self.code.push(SockFilter {
            code: jmp,
            jt,
            jf,
            k,
        });
        self.ret(action);
    }
    fn finish(mut self) -> Result<Vec<SockFilter>, String> {
        for (at, l) in std::mem::take(&mut self.fixups) {
            let target = self.labels[l].ok_or("internal: a label was never placed")?;
            self.code[at].k = u32::try_from(target - at - 1).map_err(|_| "filter too long")?;
        }
        if self.code.len() > 4096 {
            return Err(format!(
                "the filter needs {} instructions; the kernel takes 4096",
                self.code.len()
            ));
        }
        Ok(self.code)
    }
}

/// Builds the program: listed syscalls get `matched` (subject to their conditions),
/// everything else, other architectures and the x32 ABI get `mismatch`.
pub fn program(
    entries: &BTreeMap<u32, Entry>,
    matched: u32,
    mismatch: u32,
) -> Result<Vec<SockFilter>, String> {
    let arch = audit_arch().ok_or_else(|| {
        format!(
            "seccomp filters are not built for {}",
            std::env::consts::ARCH
        )
    })?;
    let mut a = Asm::default();
    a.op(LD_W_ABS, ARCH);
    a.ret_if(JEQ_K, arch, false, mismatch);
    // x32 syscalls (bit 30 set) fall in the last range, past every listed number.
    a.op(LD_W_ABS, NR);
    let spans = ranges(entries, matched, mismatch);
    let mut blocks = Vec::new();
    tree(&mut a, &spans, &mut blocks);
    for (label, alts) in blocks {
        a.place(label);
        conditions(&mut a, alts, matched, mismatch);
    }
    a.finish()
}

/// What a range of syscall numbers gets: an action, or the argument checks of one
/// syscall.
#[derive(Clone, Copy)]
enum Outcome<'e> {
    Ret(u32),
    Check(&'e [Vec<Cond>]),
}

/// The syscall numbers cut into ranges `[start, next start)` of one outcome each:
/// neighbouring syscalls with the same answer share a range (most allowed ones are
/// neighbours), so the search has few ranges to tell apart.
fn ranges<'e>(
    entries: &'e BTreeMap<u32, Entry>,
    matched: u32,
    mismatch: u32,
) -> Vec<(u32, Outcome<'e>)> {
    // Each listed number starts a range, and the number after it starts a "mismatch"
    // range unless it is listed too; then equal neighbours merge.
    let mut starts: BTreeMap<u32, Outcome<'e>> = BTreeMap::new();
    starts.insert(0, Outcome::Ret(mismatch));
    for nr in entries.keys() {
        if let Some(next) = nr.checked_add(1) {
            starts.entry(next).or_insert(Outcome::Ret(mismatch));
        }
    }
    for (nr, e) in entries {
        let o = match e {
            Entry::Always => Outcome::Ret(matched),
            Entry::When(alts) => Outcome::Check(alts),
        };
        starts.insert(*nr, o);
    }
    let mut out: Vec<(u32, Outcome<'e>)> = Vec::new();
    for (start, o) in starts {
        if let (Some((_, Outcome::Ret(a))), Outcome::Ret(b)) = (out.last(), o) {
            if *a == b {
                continue;
            }
        }
        out.push((start, o));
    }
    out
}

/// Binary search over the ranges' starts (the syscall number is in the accumulator).
fn tree<'e>(a: &mut Asm, spans: &[(u32, Outcome<'e>)], blocks: &mut Vec<(usize, &'e [Vec<Cond>])>) {
    if let [(_, outcome)] = spans {
        match outcome {
            Outcome::Ret(action) => a.ret(*action),
            Outcome::Check(alts) => {
                let l = a.label();
                a.ja(l);
                blocks.push((l, alts));
            }
        }
        return;
    }
    let mid = spans.len() / 2;
    let right = a.label();
    a.jump_if(JGE_K, spans[mid].0, true, right);
    tree(a, &spans[..mid], blocks);
    a.place(right);
    tree(a, &spans[mid..], blocks);
}

/// The argument checks of one syscall: each alternative falls through to `matched`
/// when all its conditions hold and jumps to the next one otherwise.
fn conditions(a: &mut Asm, alts: &[Vec<Cond>], matched: u32, mismatch: u32) {
    for alt in alts {
        let next = a.label();
        for c in alt {
            cond(a, c, next);
        }
        a.ret(matched);
        a.place(next);
    }
    a.ret(mismatch);
}

/// Falls through when `c` holds, jumps to `fail` otherwise.
fn cond(a: &mut Asm, c: &Cond, fail: usize) {
    let lo_at = ARGS + 8 * c.index as u32;
    let hi_at = lo_at + 4;
    let (vlo, vhi) = (c.value as u32, (c.value >> 32) as u32);
    match &c.cmp {
        Cmp::Eq | Cmp::Ne | Cmp::MaskedEq(_) => {
            let (mlo, mhi) = match c.cmp {
                Cmp::MaskedEq(m) => (m as u32, (m >> 32) as u32),
                _ => (u32::MAX, u32::MAX),
            };
            let ne = c.cmp == Cmp::Ne;
            // For `!=`: equal halves mean failure only when both are equal.
            let pass = a.label();
            let half = |a: &mut Asm, at: u32, mask: u32, v: u32, last: bool| {
                a.op(LD_W_ABS, at);
                if mask != u32::MAX {
                    a.op(ALU_AND_K, mask);
                }
                if ne {
                    if last {
                        a.jump_if(JEQ_K, v, true, fail);
                    } else {
                        a.jump_if(JEQ_K, v, false, pass);
                    }
                } else {
                    a.jump_if(JEQ_K, v, false, fail);
                }
            };
            if c.wide {
                half(a, hi_at, mhi, vhi, false);
            }
            half(a, lo_at, mlo, vlo, true);
            a.place(pass);
        }
        ord => {
            // Unsigned order: on 64 bits the high halves decide unless equal.
            let (jmp, on_true) = match ord {
                Cmp::Gt => (JGT_K, true),
                Cmp::Ge => (JGE_K, true),
                Cmp::Lt => (JGE_K, false),
                _ => (JGT_K, false), // Le
            };
            let decided_pass = a.label();
            if c.wide {
                a.op(LD_W_ABS, hi_at);
                // hi above: Gt/Ge pass, Lt/Le fail; hi below: the opposite.
                let (above, below) = if on_true {
                    (decided_pass, fail)
                } else {
                    (fail, decided_pass)
                };
                a.jump_if(JGT_K, vhi, true, above);
                a.jump_if(JEQ_K, vhi, false, below);
            }
            a.op(LD_W_ABS, lo_at);
            a.jump_if(jmp, vlo, !on_true, fail);
            a.place(decided_pass);
        }
    }
}

/// `SECCOMP_RET_*` values.
pub mod action {
    /// Kill the whole process.
    pub const KILL_PROCESS: u32 = 0x8000_0000;
    /// Kill the thread.
    pub const KILL_THREAD: u32 = 0x0000_0000;
    /// SIGSYS.
    pub const TRAP: u32 = 0x0003_0000;
    /// Fail with errno (in the low 16 bits).
    pub const ERRNO: u32 = 0x0005_0000;
    /// Notify a tracer (data in the low 16 bits).
    pub const TRACE: u32 = 0x7ff0_0000;
    /// Allow after logging.
    pub const LOG: u32 = 0x7ffc_0000;
    /// Allow.
    pub const ALLOW: u32 = 0x7fff_0000;
}

/// The kernel's side, for tests: a tiny interpreter of the opcodes this generator emits,
/// so programs are checked on real `seccomp_data` without installing anything.
#[cfg(test)]
pub mod interpreter {
    use super::*;

    /// Runs the program on a `seccomp_data` as the kernel would (a tiny interpreter of
    /// the opcodes used above), so the tree and the conditions are checked without
    /// installing anything.
    pub fn run(prog: &[SockFilter], nr: u32, args: [u64; 6]) -> u32 {
        steps(prog, nr, args).0
    }

    /// The program's answer and how many instructions it executed to get there.
    pub fn steps(prog: &[SockFilter], nr: u32, args: [u64; 6]) -> (u32, usize) {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&audit_arch().unwrap().to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut acc, mut pc, mut n) = (0u32, 0usize, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            n += 1;
            match i.code {
                LD_W_ABS => {
                    let o = i.k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                ALU_AND_K => acc &= i.k,
                JA => pc += i.k as usize,
                JEQ_K | JGT_K | JGE_K => {
                    let t = match i.code {
                        JEQ_K => acc == i.k,
                        JGT_K => acc > i.k,
                        _ => acc >= i.k,
                    };
                    pc += if t { i.jt } else { i.jf } as usize;
                }
                RET_K => return (i.k, n),
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    /// What a stack of programs answers, as the kernel decides it: every program runs,
    /// the strictest action wins (`ACTION_ONLY` compared as a signed value), and among
    /// equal actions the program installed last (the end of the list) answers.
    pub fn run_stack(programs: &[Vec<SockFilter>], nr: u32, args: [u64; 6]) -> u32 {
        let action_only = |r: u32| (r & 0xffff_0000) as i32;
        let mut answer = action::ALLOW;
        for p in programs.iter().rev() {
            let r = run(p, nr, args);
            if action_only(r) < action_only(answer) {
                answer = r;
            }
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::interpreter::{run, steps};
    use super::*;

    #[test]
    fn the_tree_finds_every_listed_syscall_and_only_those() {
        let mut e = BTreeMap::new();
        for nr in (0..400).step_by(3) {
            e.insert(nr, Entry::Always);
        }
        let p = program(&e, action::ALLOW, action::ERRNO | 1).unwrap();
        for nr in 0..420 {
            // A binary search, not a list: a few dozen instructions at most per call.
            let (_, n) = steps(&p, nr, [0; 6]);
            assert!(n <= 30, "nr {nr}: {n} instructions");
            let want = if nr % 3 == 0 && nr < 400 {
                action::ALLOW
            } else {
                action::ERRNO | 1
            };
            assert_eq!(run(&p, nr, [0; 6]), want, "nr {nr}");
        }
        // The x32 ABI and unknown numbers get the mismatch action.
        assert_eq!(run(&p, 0x4000_0000, [0; 6]), action::ERRNO | 1);
    }

    #[test]
    fn conditions_on_arguments() {
        let c = |index, cmp, value, wide| Cond {
            index,
            cmp,
            value,
            wide,
        };
        let mut e = BTreeMap::new();
        // socket: allow unless the family is 40; clone: only without namespace flags;
        // personality: 0 or 8; 7: a 64-bit range check.
        e.insert(41, Entry::When(vec![vec![c(0, Cmp::Ne, 40, false)]]));
        e.insert(
            56,
            Entry::When(vec![vec![c(0, Cmp::MaskedEq(0x7E02_0000), 0, false)]]),
        );
        e.insert(
            135,
            Entry::When(vec![
                vec![c(0, Cmp::Eq, 0, false)],
                vec![c(0, Cmp::Eq, 8, false)],
            ]),
        );
        e.insert(
            7,
            Entry::When(vec![vec![
                c(1, Cmp::Ge, 1 << 32, true),
                c(1, Cmp::Lt, (2 << 32) + 5, true),
            ]]),
        );
        e.insert(
            8,
            Entry::When(vec![vec![c(2, Cmp::Ne, 0x1_0000_0002, true)]]),
        );
        let (ok, no) = (action::ALLOW, action::ERRNO | 1);
        let p = program(&e, ok, no).unwrap();
        let a0 = |v| [v, 0, 0, 0, 0, 0];
        assert_eq!(run(&p, 41, a0(2)), ok);
        assert_eq!(run(&p, 41, a0(40)), no);
        // Junk in the high half of an `int` does not change the answer.
        assert_eq!(run(&p, 41, a0(40 | (7 << 32))), no);
        assert_eq!(run(&p, 56, a0(0x11)), ok);
        assert_eq!(run(&p, 56, a0(0x1000_0000 | 0x11)), no);
        assert_eq!(run(&p, 135, a0(8)), ok);
        assert_eq!(run(&p, 135, a0(0)), ok);
        assert_eq!(run(&p, 135, a0(9)), no);
        let a1 = |v| [0, v, 0, 0, 0, 0];
        assert_eq!(run(&p, 7, a1(1 << 32)), ok);
        assert_eq!(run(&p, 7, a1((2 << 32) + 4)), ok);
        assert_eq!(run(&p, 7, a1((2 << 32) + 5)), no);
        assert_eq!(run(&p, 7, a1(5)), no);
        let a2 = |v| [0, 0, v, 0, 0, 0];
        assert_eq!(run(&p, 8, a2(0x1_0000_0002)), no);
        assert_eq!(run(&p, 8, a2(0x2_0000_0002)), ok);
        assert_eq!(run(&p, 8, a2(2)), ok);
    }
}
