//! What a pull or an import shows on a terminal: a line per layer with bytes, total and
//! rate, redrawn in place; nothing when standard error is not a terminal (logs and
//! scripts get the one summary line the command prints).

use super::digest::Digest;
use super::install::Progress;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the lines are redrawn.
const REDRAW: Duration = Duration::from_millis(100);

struct Line {
    done: u64,
    total: u64,
    state: &'static str,
}

struct Board {
    order: Vec<Digest>,
    lines: BTreeMap<Digest, Line>,
    drawn: usize,
    last: Option<Instant>,
    started: Instant,
}

/// Formats a byte count for people (`12.3 MB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl Board {
    fn draw(&mut self, force: bool) {
        let now = Instant::now();
        if !force && self.last.is_some_and(|t| now - t < REDRAW) {
            return;
        }
        self.last = Some(now);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let mut out = String::new();
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn));
        }
        let mut total_done = 0;
        for d in &self.order {
            let Some(l) = self.lines.get(d) else { continue };
            total_done += l.done;
            out.push_str(&format!(
                "\x1b[2K{}  {:<11} {:>9} / {:<9}\n",
                d.short(),
                l.state,
                human_bytes(l.done),
                human_bytes(l.total)
            ));
        }
        out.push_str(&format!(
            "\x1b[2K{:<26} {:>9}/s\n",
            "",
            human_bytes((total_done as f64 / secs) as u64)
        ));
        self.drawn = self.order.len() + 1;
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    }
}

/// A progress callback: layers drawn on standard error when it is a terminal (and not
/// `quiet`); skipped entries always said there, one line each.
pub fn terminal(quiet: bool) -> Option<Arc<dyn Fn(Progress) + Send + Sync>> {
    if quiet || !std::io::stderr().is_terminal() {
        return Some(Arc::new(|p: Progress| {
            if let Progress::Skipped(layer, what) = p {
                eprintln!("haconiwa: layer {layer}: {what}");
            }
        }));
    }
    let board = Arc::new(Mutex::new(Board {
        order: Vec::new(),
        lines: BTreeMap::new(),
        drawn: 0,
        last: None,
        started: Instant::now(),
    }));
    Some(Arc::new(move |p: Progress| {
        let mut b = board.lock().unwrap_or_else(|p| p.into_inner());
        match p {
            Progress::Resolved { todo, .. } => {
                for (d, size) in todo {
                    b.order.push(d.clone());
                    b.lines.insert(
                        d,
                        Line {
                            done: 0,
                            total: size,
                            state: "waiting",
                        },
                    );
                }
                b.draw(true);
            }
            Progress::Bytes { blob, done, total } => {
                if let Some(l) = b.lines.get_mut(&blob) {
                    l.done = done;
                    l.total = total;
                    l.state = "downloading";
                }
                b.draw(false);
            }
            Progress::Unpacking(d) => {
                if let Some(l) = b.lines.get_mut(&d) {
                    l.done = l.total;
                    l.state = "unpacking";
                }
                b.draw(true);
            }
            Progress::Skipped(layer, what) => {
                b.drawn = 0;
                eprintln!("haconiwa: layer {layer}: {what}");
            }
            Progress::LayerDone(d) => {
                if let Some(l) = b.lines.get_mut(&d) {
                    l.done = l.total;
                    l.state = "done";
                }
                b.draw(true);
            }
        }
    }))
}
