//! What an idle init keeps resident. litevisor is one executable with the replicator, S3 and TLS
//! inside; as an init it runs a small part of it, but start-up (argument parsing, logging set-up,
//! reading the configuration, starting the runtime) touches code scattered over its ~10 MiB of text,
//! and the kernel maps file pages in 64-128 KiB batches around each fault ("fault-around"). Those
//! mappings stay in the process: nearly all of an idle litevisor's proportional set size (PSS) was
//! clean pages of its own executable that nothing would run again.
//!
//! [`settle`], called once start-up is over, drops them: it unmaps the executable's read-only pages
//! (`MADV_DONTNEED`) and returns the allocator's free memory to the kernel (`malloc_trim`). The
//! pages stay in the page cache; whatever runs next (forwarding a signal, reaping, a restart) maps
//! back just what it touches, from memory. This is the same idea as the kernel freeing its `__init`
//! sections after boot.
//!
//! Only pages that are never written are dropped: from the ELF header to the end of the code. They
//! hold the headers, read-only data, unwind tables and code, which no relocation writes to (Rust
//! never emits text relocations). The writable segments, whose private copies `MADV_DONTNEED` would
//! throw away, come after `etext` and are never touched.

unsafe extern "C" {
    /// Provided by the linker: the ELF header, start of the first (read-only) loaded segment.
    static __ehdr_start: u8;
    /// Provided by the linker: the end of the code.
    static etext: u8;
}

/// Gives back the start-up pages: the executable's read-only mappings, and the heap's free memory.
/// Call it once start-up is over, when the process is about to sit idle. It only makes system
/// calls, never fails and never blocks; errors (an old kernel, a hole in the range) are ignored.
pub fn settle() {
    release_read_only_image();
    trim_heap();
}

fn release_read_only_image() {
    // SAFETY: sysconf has no memory-safety requirements.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 { page as usize } else { 4096 };
    // Only the addresses of the linker's symbols are taken, never their contents.
    let (start, end) = (
        (&raw const __ehdr_start) as usize,
        (&raw const etext) as usize,
    );
    // Whole pages inside the range only, so the first writable page is never reached.
    let start = start.next_multiple_of(page);
    let end = end & !(page - 1);
    if end <= start {
        return;
    }
    // SAFETY: the range lies within our own executable's read-only, never-written mappings (see the
    // module comment); dropping them only makes later accesses fault the same contents back in from
    // the file.
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
}

fn trim_heap() {
    // SAFETY: malloc_trim only returns free memory of the allocator's arenas to the kernel.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn settling_leaves_the_process_working() {
        let before: Vec<String> = (0..100).map(|i| format!("{i}")).collect();
        super::settle();
        let after: Vec<String> = (0..100).map(|i| format!("{i}")).collect();
        assert_eq!(before, after);
    }
}
