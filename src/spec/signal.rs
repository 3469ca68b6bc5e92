//! Signal names as definitions and images write them (`SIGQUIT`, `QUIT`, `3`,
//! `SIGRTMIN+3`), checked and made canonical without a syscall: a stop signal travels in
//! the replicated state and is read on another host.

/// The standard Linux signals (x86-64 and the generic numbering), name without `SIG`.
const SIGNALS: [(&str, i32); 31] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// The first and last real-time signal as user space sees them (glibc keeps 32 and 33).
const RTMIN: i32 = 34;
const RTMAX: i32 = 64;

/// The number of a signal written as a name (with or without `SIG`, any case), a
/// number, or `RTMIN+n` / `RTMAX-n`.
pub fn number(text: &str) -> Option<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return (1..=RTMAX).contains(&n).then_some(n);
    }
    let up = text.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(&(_, n)) = SIGNALS.iter().find(|(s, _)| *s == name) {
        return Some(n);
    }
    if name == "IOT" {
        return Some(6);
    }
    if name == "POLL" {
        return Some(29);
    }
    let rt = |base: i32, off: &str, sign: i32| {
        let k: i32 = off.parse().ok()?;
        let n = base + sign * k;
        (RTMIN..=RTMAX).contains(&n).then_some(n)
    };
    match name {
        "RTMIN" => Some(RTMIN),
        "RTMAX" => Some(RTMAX),
        _ => {
            if let Some(off) = name.strip_prefix("RTMIN+") {
                rt(RTMIN, off, 1)
            } else if let Some(off) = name.strip_prefix("RTMAX-") {
                rt(RTMAX, off, -1)
            } else {
                None
            }
        }
    }
}

/// The canonical form of a signal: `SIGNAME` for the standard ones, the number for
/// real-time ones; `None` when it is not a signal.
pub fn canonical(text: &str) -> Option<String> {
    let n = number(text)?;
    Some(match SIGNALS.iter().find(|(_, k)| *k == n) {
        Some((name, _)) => format!("SIG{name}"),
        None => n.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_realtime() {
        assert_eq!(canonical("SIGQUIT").as_deref(), Some("SIGQUIT"));
        assert_eq!(canonical("quit").as_deref(), Some("SIGQUIT"));
        assert_eq!(canonical("15").as_deref(), Some("SIGTERM"));
        assert_eq!(canonical("SIGRTMIN+3").as_deref(), Some("37"));
        assert_eq!(number("RTMAX-1"), Some(63));
        assert_eq!(number("SIGWINCH"), Some(28));
        for bad in ["", "0", "65", "SIGFOO", "RTMIN+40", "-1"] {
            assert_eq!(number(bad), None, "{bad}");
        }
    }
}
