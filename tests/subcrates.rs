//! The umbrella crate re-exports every part: each path a user may name resolves.

#[test]
fn every_reexported_path_resolves() {
    // The crates, under their short names.
    let _ = mp::process::cpu_count;
    let _ = mp::process::wire::DEFAULT_MAX_FRAME;
    let _ = mp::process::fdpass::MAX_FDS_PER_FRAME;
    // The headline items at the root.
    let _: fn() -> mp::ProcessInfo = mp::current_process;
    let _: fn() -> Option<mp::ParentProcess> = mp::parent_process;
    let _: fn() -> Vec<mp::ChildInfo> = mp::active_children;
    let _: fn() -> usize = mp::cpu_count;
    let _: fn(&str) -> Result<mp::Context, mp::Error> = mp::get_context;
    let _: fn() -> Result<mp::StartMethod, mp::Error> = mp::get_start_method;
    let _: fn(mp::StartMethod, bool) -> Result<(), mp::Error> = mp::set_start_method;
    let _: fn() -> [mp::StartMethod; 3] = mp::get_all_start_methods;
    let _: fn() -> Result<mp::InitGuard, mp::Error> = mp::init;
    let _ = std::any::type_name::<mp::Process>();
    let _ = std::any::type_name::<mp::CloseError>();
    let _: fn(usize) -> Result<mp::Pool, mp::PoolError> = mp::Pool::new;
    let _ = std::any::type_name::<mp::AsyncResult<u64>>();
    let _ = std::any::type_name::<mp::Imap<std::ops::Range<u64>, u64>>();
    let _ = std::any::type_name::<mp::Queue<u8>>();
    let _ = std::any::type_name::<mp::JoinableQueue<u8>>();
    let _ = std::any::type_name::<mp::SimpleQueue<u8>>();
    let _ = std::any::type_name::<mp::PutError<u8>>();
    let _ = mp::Queue::<u8>::builder();
    let _ = mp::queue::DEFAULT_CAPACITY;
}

#[test]
fn cpu_count_is_at_least_one() {
    assert!(mp::cpu_count() >= 1);
}
