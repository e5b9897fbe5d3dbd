//! A program written against `mp::` only: processes under the default start method, and a
//! context per method, as the tutorials use them.

fn square_exit(x: i32) {
    std::process::exit(x * x);
}

#[test]
fn processes_run_through_the_umbrella() {
    let _guard = mp::init().unwrap();
    let mut p = mp::Process::new(square_exit, (3,));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 9);
}

#[test]
fn every_start_method_runs_through_a_context() {
    for method in mp::get_all_start_methods() {
        let ctx = mp::get_context(method.as_str()).unwrap();
        let mut p = ctx.process(square_exit, (2,));
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 4, "under {method}");
    }
}
