//! Link settings of the litevisor executable.
//!
//! It is linked position-dependent (`-no-pie`) on Linux. A position-independent executable is
//! relocated by the dynamic loader at every start: for this binary that is ~28,000 relocations, which
//! make the loader read ~670 KiB of relocation tables and write into ~430 KiB of pointer tables
//! (`.data.rel.ro`), so each of those pages becomes a private copy. For a PID 1 that otherwise idles
//! in ~0.3 MiB, that was most of its memory and a good part of its start-up time (see the README's
//! "Footprint"). Linked at a fixed address, the linker resolves them all: nothing is relocated at run
//! time and those pages stay shared, clean and mostly unread. The price is that the executable's own
//! code sits at a fixed address (no ASLR for it; the stack, heap and shared libraries stay
//! randomised), as in distributions' non-PIE builds.
//!
//! Static builds (`-C target-feature=+crt-static`, the container image) get `-static` as well, so the
//! result is a plain static executable rather than a static PIE, which relocates itself the same way.
//!
//! Dynamic glibc builds also link the unwinder statically (`libgcc_eh.a`, as static builds always
//! do) instead of loading `libgcc_s.so.1`: that shared library's constructor probes the CPU with
//! `cpuid`, which traps to the hypervisor in a VM; loading it cost ~0.1 ms of every start, a twentieth
//! of `litevisor -- /bin/true`. Rust's standard library asks for `-lgcc_s` itself, so the build puts
//! a one-line linker script named `libgcc_s.so` first in the library path, which the linker reads as
//! "use `-lgcc_eh`". Panics unwind exactly as before (the supervisor relies on that).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-no-pie");
    let static_crt = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|features| features.split(',').any(|f| f == "crt-static"));
    if static_crt {
        println!("cargo:rustc-link-arg-bins=-static");
    } else if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu") {
        let dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        std::fs::write(dir.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n")
            .expect("write the libgcc_s linker script");
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
}
