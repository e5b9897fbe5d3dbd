//! The umbrella crate re-exports every part: each path a user may name resolves, and every
//! public type of every crate is named at `mp::`'s root.

use std::any::type_name;

#[test]
fn every_reexported_path_resolves() {
    // The crates, under their short names.
    let _ = mp::process::cpu_count;
    let _ = mp::process::wire::DEFAULT_MAX_FRAME;
    let _ = mp::process::fdpass::MAX_FDS_PER_FRAME;
    let _ = mp::shm::SharedMemory::new;
    let _ = mp::sync::SEM_VALUE_MAX;
    let _ = mp::queue::DEFAULT_CAPACITY;
    let _ = mp::pool::default_chunksize;
    // The headline functions at the root.
    let _: fn() -> mp::ProcessInfo = mp::current_process;
    let _: fn() -> Option<mp::ParentProcess> = mp::parent_process;
    let _: fn() -> Vec<mp::ChildInfo> = mp::active_children;
    let _: fn() -> usize = mp::cpu_count;
    let _: fn(&str) -> Result<mp::Context, mp::ProcessError> = mp::get_context;
    let _: fn() -> Result<mp::StartMethod, mp::ProcessError> = mp::get_start_method;
    let _: fn(mp::StartMethod, bool) -> Result<(), mp::ProcessError> = mp::set_start_method;
    let _: fn() -> [mp::StartMethod; 3] = mp::get_all_start_methods;
    let _: fn() -> Result<mp::InitGuard, mp::ProcessError> = mp::init;
    let _: fn(bool) -> Result<(mp::Connection, mp::Connection), mp::QueueError> = mp::pipe;
    let _ = mp::wait::<[&mp::Connection; 1]>;
    let _ = mp::wait_timeout::<Vec<mp::Connection>>;
    let _: fn(usize) -> Result<mp::Pool, mp::PoolError> = mp::Pool::new;
    let _ = mp::Queue::<u8>::builder();
    let _ = mp::Pool::builder();
    // Python's multiprocessing.connection, as a module and at the root.
    let _ = mp::connection::Listener::builder();
    let _ = mp::connection::Client::builder("127.0.0.1:1");
    let _ = mp::connection::Address::parse;
    let _: fn() -> std::io::Result<mp::AuthKey> = mp::authkey;
    let _ = mp::connection::pipe;
    let _ = mp::connection::wait::<[&mp::Connection; 1]>;
    let _ = mp::connection::DEFAULT_HANDSHAKE_TIMEOUT;
    let _: fn(mp::LevelFilter) -> bool = mp::log_to_stderr;
    let _ = mp::Progress::bar;
    let _ = mp::pool::DEFAULT_INTERVAL;
}

#[test]
fn every_public_type_is_named_at_the_root() {
    let names = [
        // mp (the umbrella)
        type_name::<mp::Error>(),
        type_name::<mp::Result<()>>(),
        // mp-process
        type_name::<mp::ProcessError>(),
        type_name::<mp::CloseError>(),
        type_name::<mp::WireError>(),
        type_name::<mp::Process>(),
        type_name::<mp::ProcessInfo>(),
        type_name::<mp::ParentProcess>(),
        type_name::<mp::ChildInfo>(),
        type_name::<mp::Context>(),
        type_name::<mp::StartMethod>(),
        type_name::<mp::InitGuard>(),
        type_name::<mp::AuthKey>(),
        // mp-shm
        type_name::<mp::ShmError>(),
        type_name::<mp::SharedMemory>(),
        type_name::<mp::RawValue<u64>>(),
        type_name::<mp::RawArray<u64>>(),
        type_name::<mp::ShareableList>(),
        type_name::<mp::Item>(),
        // mp-sync
        type_name::<mp::SyncError>(),
        type_name::<mp::LockError<()>>(),
        type_name::<mp::LockResult<()>>(),
        type_name::<mp::TryLockResult<()>>(),
        type_name::<mp::Lock>(),
        type_name::<mp::RLock>(),
        type_name::<mp::AnyLock>(),
        type_name::<mp::LockGuard<'static>>(),
        type_name::<mp::Semaphore>(),
        type_name::<mp::BoundedSemaphore>(),
        type_name::<mp::SemaphoreGuard<'static>>(),
        type_name::<mp::Event>(),
        type_name::<mp::Condition>(),
        type_name::<mp::ConditionGuard<'static>>(),
        type_name::<mp::Barrier>(),
        type_name::<mp::Value<u64>>(),
        type_name::<mp::ValueGuard<'static, u64>>(),
        type_name::<mp::Array<u64>>(),
        type_name::<mp::ArrayGuard<'static, u64>>(),
        // mp-queue
        type_name::<mp::QueueError>(),
        type_name::<mp::PutError<u8>>(),
        type_name::<mp::Queue<u8>>(),
        type_name::<mp::JoinableQueue<u8>>(),
        type_name::<mp::SimpleQueue<u8>>(),
        type_name::<mp::QueueBuilder<mp::Queue<u8>>>(),
        type_name::<mp::Connection>(),
        type_name::<mp::Listener>(),
        type_name::<mp::Client>(),
        type_name::<mp::Address>(),
        type_name::<mp::Bytes>(),
        // mp-pool
        type_name::<mp::PoolError>(),
        type_name::<mp::SerializationError>(),
        type_name::<mp::Pool>(),
        type_name::<mp::PoolBuilder>(),
        type_name::<mp::AsyncResult<u64>>(),
        type_name::<mp::Imap<std::ops::Range<u64>, u64>>(),
        type_name::<mp::Progress>(),
        type_name::<mp::ProgressEvents>(),
        type_name::<mp::ProgressUpdate>(),
        type_name::<mp::Insights>(),
        type_name::<mp::WorkerInsights>(),
        type_name::<mp::Restart>(),
        type_name::<mp::RestartReason>(),
        type_name::<mp::SlowTask>(),
        type_name::<mp::LevelFilter>(),
    ];
    // The traits, by bounds.
    fn target<F: mp::Target<(u64,)>>(_: F) {}
    fn output<O: mp::TargetOutput>() {}
    fn task<F: mp::Task<(u64,), Output = u64>>(_: F) {}
    target(|_: u64| ());
    output::<()>();
    task(square);
    // The aliases name the crates' own types.
    assert_eq!(type_name::<mp::ProcessError>(), type_name::<mp::process::Error>());
    assert_eq!(type_name::<mp::ShmError>(), type_name::<mp::shm::Error>());
    assert_eq!(type_name::<mp::SyncError>(), type_name::<mp::sync::Error>());
    assert_eq!(type_name::<mp::QueueError>(), type_name::<mp::queue::Error>());
    assert_eq!(type_name::<mp::PoolError>(), type_name::<mp::pool::Error>());
    assert!(names.iter().all(|n| !n.is_empty()));
}

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn cpu_count_is_at_least_one() {
    assert!(mp::cpu_count() >= 1);
}
