//! Fault injection for the tests, compiled into debug builds only: `LITEVISOR_TEST_PANIC` lists
//! `POINT:UNIT` entries (comma-separated, e.g. `stop:replicate:/data/app.db,ready:web`) and the named
//! unit panics when it reaches that point, once per process. It is how the tests prove that a
//! panicking unit is contained (see the orchestrator) without shipping a panic switch in release.

#[cfg(debug_assertions)]
pub fn panic_if(point: &str, unit: &str) {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static FIRED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let Ok(wanted) = std::env::var("LITEVISOR_TEST_PANIC") else {
        return;
    };
    let key = format!("{point}:{unit}");
    if !wanted.split(',').any(|w| w == key) {
        return;
    }
    let first = FIRED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(key.clone());
    if first {
        panic!("injected panic at {key} (LITEVISOR_TEST_PANIC)");
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn panic_if(_point: &str, _unit: &str) {}
