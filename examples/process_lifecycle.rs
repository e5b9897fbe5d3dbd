//! A tour of a process's life: names, daemon flags, exit codes for a normal exit,
//! `exit(8)`, a panic and the two signals, a grandchild, and `join_timeout`.

use std::time::Duration;

use mp::Process;

fn ok() {}

fn exit_8() {
    std::process::exit(8);
}

fn panics() {
    // The panic message and a backtrace go to the child's stderr; its exit code is 1.
    std::panic::set_hook(Box::new(|_| {}));
    panic!("this child panics");
}

fn sleeps() {
    std::thread::sleep(Duration::from_secs(60));
}

fn grandchild() {
    let parent = mp::parent_process().expect("a parent");
    println!("{} has parent {}", mp::current_process().name(), parent.name());
}

fn child() {
    let mut g = Process::new(grandchild, ());
    g.start().expect("start the grandchild");
    g.join().expect("join the grandchild");
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    println!("main process: {}", mp::current_process().name());

    let mut p = Process::new(ok, ());
    p.start()?;
    println!("{} exited with {}", p.name(), p.join()?);

    let mut p = Process::new(exit_8, ());
    p.start()?;
    println!("exit(8) gives {}", p.join()?);

    let mut p = Process::new(panics, ());
    p.start()?;
    println!("a panic gives {}", p.join()?);

    let mut p = Process::new(sleeps, ()).with_name("sleeper");
    p.start()?;
    println!(
        "{} still running after join_timeout(0): {}",
        p.name(),
        p.join_timeout(Duration::ZERO)?.is_none()
    );
    p.terminate()?;
    println!("terminate gives {}", p.join()?);

    let mut p = Process::new(sleeps, ()).with_daemon(true);
    p.start()?;
    p.kill()?;
    println!("kill gives {}", p.join()?);

    let mut p = Process::new(child, ()).with_name("parent-of-one");
    p.start()?;
    p.join()?;
    Ok(())
}
