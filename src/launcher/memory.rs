//! What a long-lived process of a container gives back: the monitor and the container's
//! PID 1 are forks of a bigger process (the CLI that parsed the definition, or the
//! helper that took the launch). Without this, the heap and the stack pages that
//! process touched stay resident for the container's whole life, once per container
//! (docs/benchmarks.md, "Memory per container").

use std::ops::Range;

/// Gives back the heap's free pages and the stack below the caller. For the monitor,
/// which goes on allocating. Called on the main thread.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only trims this process's own malloc arenas, under their
    // locks like any malloc call; it takes no pointer and frees nothing in use.
    // (musl's allocator gives freed memory back by itself and has no malloc_trim.)
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
    if let Some(stack) = mappings().stack {
        release_stack_below_here(stack);
    }
}

/// Gives back the whole heap, but for the thread's own TLS and control block that
/// static glibc keeps at its start, and the stack below the caller. For the
/// container's PID 1 once it is set up: from then on it only waits for signals, reaps
/// and forwards, and ends with `_exit`, so it never calls the allocator again (which
/// would find its arena's pages zeroed). Called on the main thread.
pub fn release_heap_for_good() {
    let Mappings { heap, stack } = mappings();
    if let Some(stack) = stack {
        release_stack_below_here(stack);
    }
    let Some(heap) = heap else {
        return;
    };
    // Static glibc allocates the main thread's TLS block and its control block (at the
    // thread pointer, ~2.3 kB) with sbrk before malloc's first chunk: those pages stay,
    // with a margin. Elsewhere (a dynamic or musl build) the TLS is not on the heap.
    const KEEP_PAST_TP: usize = 8 * 1024;
    let Some(tp) = thread_pointer() else {
        return;
    };
    let start = if heap.contains(&tp) {
        (tp + KEEP_PAST_TP).next_multiple_of(page_size())
    } else {
        heap.start
    };
    if start >= heap.end {
        return;
    }
    // SAFETY: [start, heap.end) is the part of this process's heap past its TLS and
    // thread control block: malloc's chunks only. Nothing reads them again: the caller
    // allocates no more and never returns (nor runs exit handlers or TLS destructors,
    // which free); a page touched there again would come back zero-filled.
    unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            heap.end - start,
            libc::MADV_DONTNEED,
        );
    }
}

/// Keeps all of this process's allocations in malloc's main arena. glibc gives a new
/// thread an arena of its own on its first allocation (a 64 MB reservation whose first
/// pages are touched): for a monitor's log copier thread, ~68 kB resident per
/// container, for a thread that allocates a few lines at a time.
pub fn one_malloc_arena() {
    // SAFETY: mallopt only sets a parameter of this process's allocator; it takes no
    // pointer. (musl's allocator has no arenas per thread.)
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Drops the main thread's stack pages below the caller's frame (less a margin).
fn release_stack_below_here(stack: Range<usize>) {
    const MARGIN: usize = 16 * 1024;
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    // Only on the main thread's stack (another thread's is a mapping of its own).
    if !stack.contains(&here) {
        return;
    }
    let end = here.saturating_sub(MARGIN) & !(MARGIN - 1);
    if end <= stack.start {
        return;
    }
    // SAFETY: [stack.start, end) lies in the main thread's stack (the caller runs on
    // it: `here` is inside it), at least MARGIN below the current frame, where nothing
    // live is kept; a page touched there again comes back zero-filled.
    unsafe {
        libc::madvise(
            stack.start as *mut libc::c_void,
            end - stack.start,
            libc::MADV_DONTNEED,
        );
    }
}

/// The address ranges of this process's heap and main stack.
struct Mappings {
    heap: Option<Range<usize>>,
    stack: Option<Range<usize>>,
}

/// Reads [`Mappings`] from one read of `/proc/self/maps`.
fn mappings() -> Mappings {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let range = |name: &str| {
        let line = maps.lines().find(|l| l.ends_with(name))?;
        let (a, b) = line.split_whitespace().next()?.split_once('-')?;
        Some(usize::from_str_radix(a, 16).ok()?..usize::from_str_radix(b, 16).ok()?)
    };
    Mappings {
        heap: range("[heap]"),
        stack: range("[stack]"),
    }
}

/// The calling thread's thread pointer (where its TLS control block is); only read on
/// x86-64, whose TLS layout (blocks below the pointer) `release_heap_for_good` assumes.
fn thread_pointer() -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        let tp: usize;
        // SAFETY: on x86-64 Linux the first word of the thread control block, at fs:0,
        // points to itself (glibc's and musl's `tcbhead`/`pthread` self pointer); the
        // read has no side effect.
        unsafe {
            std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags));
        }
        Some(tp)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_heap_and_the_stack_are_found_and_the_thread_pointer_lies_where_the_tls_is() {
        let Mappings { heap, stack } = mappings();
        let heap = heap.expect("a [heap] mapping");
        let stack = stack.expect("a [stack] mapping");
        assert!(heap.start < heap.end && stack.start < stack.end);
        thread_local!(static MARK: u8 = const { 0 });
        let tls = MARK.with(|m| std::ptr::addr_of!(*m) as usize);
        let tp = thread_pointer().expect("a thread pointer on this architecture");
        // The TLS block lies just below the thread pointer (x86-64's layout), within
        // a few pages of it.
        assert!(tls < tp && tp - tls < 64 * 1024, "tls {tls:#x}, tp {tp:#x}");
    }
}
