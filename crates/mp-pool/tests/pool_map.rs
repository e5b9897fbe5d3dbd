//! Every map and apply variant equals a sequential map, under the start method in
//! `MP_START_METHOD` (the cases of CPython's `_TestPool.test_map`, `test_starmap`,
//! `test_imap`, `test_imap_unordered`, `test_apply`, `test_map_async`, `test_empty_iterable`).

use std::sync::mpsc;
use std::time::Duration;

use mp_pool::{Error, Pool};

fn sqr(x: i64) -> i64 {
    x * x
}

fn mul(a: i64, b: i64) -> i64 {
    a * b
}

fn expected(n: i64) -> Vec<i64> {
    (0..n).map(sqr).collect()
}

#[test]
fn map_equals_a_sequential_map_for_every_chunksize() {
    let pool = Pool::new(3).unwrap();
    for n in [0i64, 1, 5, 100] {
        assert_eq!(pool.map(sqr, 0..n).unwrap(), expected(n), "n={n}");
        for cs in [1, 7] {
            assert_eq!(pool.map_chunked(sqr, 0..n, cs).unwrap(), expected(n), "n={n} cs={cs}");
            assert_eq!(pool.map_async_chunked(sqr, 0..n, cs).unwrap().get().unwrap(), expected(n));
        }
        assert_eq!(pool.map_async(sqr, 0..n).unwrap().get().unwrap(), expected(n));
    }
}

#[test]
fn starmap_equals_a_sequential_starmap() {
    let pool = Pool::new(2).unwrap();
    for n in [0i64, 3, 50] {
        let args: Vec<(i64, i64)> = (0..n).map(|i| (i, i + 1)).collect();
        let want: Vec<i64> = args.iter().map(|&(a, b)| a * b).collect();
        assert_eq!(pool.starmap(mul, args.clone()).unwrap(), want);
        for cs in [1, 7] {
            assert_eq!(pool.starmap_chunked(mul, args.clone(), cs).unwrap(), want);
            assert_eq!(
                pool.starmap_async_chunked(mul, args.clone(), cs).unwrap().get().unwrap(),
                want
            );
        }
        assert_eq!(pool.starmap_async(mul, args.clone()).unwrap().get().unwrap(), want);
    }
}

#[test]
fn imap_yields_in_order_and_imap_unordered_yields_everything() {
    let pool = Pool::new(2).unwrap();
    for n in [0i64, 1, 40] {
        for cs in [1, 7] {
            let got: Vec<i64> =
                pool.imap(sqr, 0..n).unwrap().with_chunksize(cs).collect::<Result<_, _>>().unwrap();
            assert_eq!(got, expected(n));
            let mut got: Vec<i64> = pool
                .imap_unordered(sqr, 0..n)
                .unwrap()
                .with_chunksize(cs)
                .collect::<Result<_, _>>()
                .unwrap();
            got.sort();
            assert_eq!(got, expected(n));
        }
    }
}

#[test]
fn imap_is_lazy_and_bounded() {
    let pool = Pool::new(2).unwrap();
    let (tx, rx) = mpsc::channel();
    let input = (0..1_000_000i64).inspect(move |i| tx.send(*i).unwrap());
    let mut it = pool.imap(sqr, input).unwrap().with_max_in_flight(10);
    assert_eq!(it.next().unwrap().unwrap(), 0);
    assert_eq!(it.next().unwrap().unwrap(), 1);
    let pulled = rx.try_iter().count();
    assert!(pulled <= 12, "imap pulled {pulled} items for 2 results with a bound of 10");
    // An infinite input works too.
    let first: Vec<i64> = pool.imap(sqr, 0..).unwrap().take(5).collect::<Result<_, _>>().unwrap();
    assert_eq!(first, [0, 1, 4, 9, 16]);
}

#[test]
fn apply_and_apply_async() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(mul, (6, 7)).unwrap(), 42);
    assert_eq!(pool.apply(|| "no args".to_string(), ()).unwrap(), "no args");
    let rs: Vec<_> = (0..50).map(|i| pool.apply_async(sqr, (i,)).unwrap()).collect();
    let got: Vec<i64> = rs.into_iter().map(|r| r.get().unwrap()).collect();
    assert_eq!(got, expected(50));
    let mut r = pool.apply_async(sqr, (9,)).unwrap();
    r.wait();
    assert!(r.ready());
    assert_eq!(r.successful(), Some(true));
    assert_eq!(r.get_timeout(Duration::from_secs(10)).unwrap(), 81);
}

/// Results taken in any order, results dropped untaken, and one result held while thousands
/// of later calls come and go (the job table moves it out of the way): each call gets its own
/// result, and the held one is still there at the end.
#[test]
fn apply_async_results_held_dropped_and_taken_out_of_order() {
    let pool = Pool::new(2).unwrap();
    let held = pool.apply_async(sqr, (-7,)).unwrap();
    let mut held_many: Vec<(i64, mp_pool::AsyncResult<i64>)> = Vec::new();
    for round in 0..20i64 {
        let rs: Vec<(i64, mp_pool::AsyncResult<i64>)> = (0..500)
            .map(|i| {
                let x = round * 1000 + i;
                (x, pool.apply_async(sqr, (x,)).unwrap())
            })
            .collect();
        for (x, r) in rs.into_iter().rev() {
            match x % 5 {
                // Dropped untaken.
                0 => drop(r),
                // Kept until the end.
                1 if x % 100 == 1 => held_many.push((x, r)),
                _ => assert_eq!(r.get().unwrap(), x * x),
            }
        }
    }
    assert_eq!(held.get().unwrap(), 49);
    assert_eq!(held_many.len(), 100);
    for (x, r) in held_many {
        assert_eq!(r.get().unwrap(), x * x);
    }
    // And the pool still serves.
    assert_eq!(pool.apply(mul, (6, 7)).unwrap(), 42);
}

#[test]
fn callbacks_receive_the_results() {
    let pool = Pool::new(2).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let r = pool.map_async(sqr, 0..10).unwrap().with_callbacks(
        move |v| tx.send(Ok(v)).unwrap(),
        move |e| tx2.send(Err(e.to_string())).unwrap(),
    );
    assert_eq!(r.get().unwrap(), expected(10));
    assert_eq!(rx.recv().unwrap(), Ok(expected(10)));
    // The error callback.
    let (tx, rx) = mpsc::channel();
    let r = pool
        .apply_async(|| -> i64 { panic!("boom") }, ())
        .unwrap()
        .with_callbacks(|_| panic!("not this one"), move |e| tx.send(e).unwrap());
    assert!(matches!(r.get(), Err(Error::Remote { .. })));
    assert!(matches!(rx.recv().unwrap(), Error::Remote { .. }));
    // A panicking callback does not kill the pool.
    let r =
        pool.apply_async(sqr, (3,)).unwrap().with_callbacks(|_| panic!("callback panics"), |_| ());
    assert_eq!(r.get().unwrap(), 9);
    assert_eq!(pool.apply(sqr, (4,)).unwrap(), 16);
}

/// Waits for a byte on `go`, then returns `x * x`.
fn sqr_when_told(x: i64, go: mp_process::fdpass::PassFd) -> i64 {
    mp_testkit::wait_for_byte(&go);
    x * x
}

/// Writes the byte `sqr_when_told` waits for.
fn tell(go: &std::os::fd::OwnedFd) {
    rustix::io::write(go, b"x").unwrap();
}

#[test]
fn callbacks_run_in_this_process_on_the_collector_thread_before_the_result_is_ready() {
    let pool = Pool::new(1).unwrap();
    let (go_r, go_w) = mp_testkit::pipe();
    // Registered before the result arrives: the collector thread runs it.
    let (tx, rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let r = pool.apply_async(sqr_when_told, (3, mp_testkit::pass(&go_r))).unwrap().with_callbacks(
        move |v| {
            let here = (std::process::id(), std::thread::current().name().map(String::from));
            tx.send((v, here)).unwrap();
            release_rx.recv().unwrap();
        },
        |_| {},
    );
    tell(&go_w);
    let (v, (pid, thread)) = rx.recv().unwrap();
    assert_eq!((v, pid), (9, std::process::id()));
    assert_eq!(thread.as_deref(), Some("mp-pool-collector"));
    // The result is ready only once its callback has returned.
    assert!(!r.ready());
    release_tx.send(()).unwrap();
    assert_eq!(r.get().unwrap(), 9);
    // Registered on a result already ready: it runs at once, on the calling thread.
    let r = pool.apply_async(sqr, (4,)).unwrap();
    r.wait();
    let (tx, rx) = mpsc::channel();
    let r = r.with_callbacks(move |v| tx.send((v, std::thread::current().id())).unwrap(), |_| {});
    assert_eq!(rx.try_recv().unwrap(), (16, std::thread::current().id()));
    assert_eq!(r.get().unwrap(), 16);
}

#[test]
fn chunksize_follows_python() {
    assert_eq!(mp_pool::default_chunksize(0, 4), 0);
    assert_eq!(mp_pool::default_chunksize(1, 4), 1);
    assert_eq!(mp_pool::default_chunksize(16, 4), 1);
    assert_eq!(mp_pool::default_chunksize(17, 4), 2);
    assert_eq!(mp_pool::default_chunksize(100, 2), 13);
}

/// Returns the read end of a pipe holding `msg`: a result that carries a descriptor.
fn pipe_with(msg: String) -> mp_process::fdpass::PassFd {
    let (r, w) = mp_testkit::pipe();
    rustix::io::write(&w, msg.as_bytes()).unwrap();
    mp_process::fdpass::PassFd(r)
}

#[test]
fn descriptors_cross_in_arguments_and_results() {
    let pool = Pool::new(2).unwrap();
    let got = pool.map(pipe_with, ["one".to_string(), "two".to_string()]).unwrap();
    let texts: Vec<String> = got
        .into_iter()
        .map(|fd| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(fd.into_inner()), &mut s)
                .unwrap();
            s
        })
        .collect();
    assert_eq!(texts, ["one", "two"]);
}

fn shout(s: String) -> String {
    s.to_uppercase()
}

#[test]
fn values_of_every_size_cross_intact() {
    let pool = Pool::new(2).unwrap();
    let items: Vec<String> = [0usize, 1, 63, 64, 127, 128, 200, 16_383, 16_384, 70_000, 1 << 20]
        .iter()
        .map(|&n| "ab".repeat(n / 2) + &"c".repeat(n % 2))
        .collect();
    let want: Vec<String> = items.iter().map(|s| s.to_uppercase()).collect();
    for cs in [1, 3, 20] {
        assert_eq!(pool.map_chunked(shout, items.clone(), cs).unwrap(), want, "cs {cs}");
        let got: Vec<String> = pool
            .imap(shout, items.clone())
            .unwrap()
            .with_chunksize(cs)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, want, "cs {cs}");
    }
}

/// `x`, plus the number written in the pipe if there is one.
fn plus_piped((x, fd): (i64, Option<mp_process::fdpass::PassFd>)) -> i64 {
    let Some(fd) = fd else { return x };
    let mut s = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(fd.into_inner()), &mut s).unwrap();
    x + s.parse::<i64>().unwrap()
}

#[test]
fn items_with_and_without_descriptors_mix_in_one_map() {
    let pool = Pool::new(2).unwrap();
    let items = || {
        (0..40i64).map(|i| {
            let fd = (i % 5 == 3).then(|| {
                let (r, w) = mp_testkit::pipe();
                rustix::io::write(&w, b"1000").unwrap();
                mp_process::fdpass::PassFd(r)
            });
            (i, fd)
        })
    };
    let want: Vec<i64> = (0..40).map(|i| if i % 5 == 3 { i + 1000 } else { i }).collect();
    assert_eq!(pool.map(plus_piped, items()).unwrap(), want);
    for cs in [1, 4, 7, 40] {
        assert_eq!(pool.map_chunked(plus_piped, items(), cs).unwrap(), want, "cs {cs}");
    }
}

/// An iterator whose exact length hint is wrong.
struct Liar {
    next: i64,
    end: i64,
    claims: usize,
}

impl Iterator for Liar {
    type Item = i64;
    fn next(&mut self) -> Option<i64> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.claims, Some(self.claims))
    }
}

#[test]
fn an_input_whose_length_hint_is_wrong_is_mapped_whole() {
    let pool = Pool::new(2).unwrap();
    for (end, claims) in [(9, 5), (2, 5), (0, 3), (100, 1), (30, 0)] {
        let got = pool.map(sqr, Liar { next: 0, end, claims }).unwrap();
        assert_eq!(got, expected(end), "{end} items claiming {claims}");
        let got = pool.starmap(mul, Liar { next: 0, end, claims }.map(|i| (i, 2))).unwrap();
        assert_eq!(got, (0..end).map(|i| i * 2).collect::<Vec<_>>());
    }
}

#[test]
fn an_input_that_panics_leaves_the_pool_working() {
    let pool = Pool::new(2).unwrap();
    let input = (0..1000i64).map(|x| if x == 600 { panic!("the input fails") } else { x });
    let r =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.map_chunked(sqr, input, 7)));
    assert!(r.is_err(), "the input's panic reaches the caller");
    assert_eq!(pool.map(sqr, 0..50).unwrap(), expected(50));
    // The given-up job does not keep the pool from finishing.
    pool.close().unwrap();
    pool.join().unwrap();
}

/// 0, 1, ... 9, then a panic.
struct Fragile(i64);

impl Iterator for Fragile {
    type Item = i64;
    fn next(&mut self) -> Option<i64> {
        if self.0 == 10 {
            panic!("the input broke at 10");
        }
        self.0 += 1;
        Some(self.0 - 1)
    }
}

#[test]
fn imap_yields_the_results_before_a_panicking_input_then_its_panic_then_ends() {
    // Issue 10: imap read 256 inputs ahead and yielded nothing when the input panicked.
    let pool = Pool::new(2).unwrap();
    for cs in [1usize, 3, 20] {
        let got: Vec<_> = pool.imap(sqr, Fragile(0)).unwrap().with_chunksize(cs).collect();
        assert_eq!(got.len(), 11, "chunksize {cs}");
        for (i, r) in got.iter().take(10).enumerate() {
            assert_eq!(r.as_ref().unwrap(), &sqr(i as i64), "chunksize {cs}");
        }
        match &got[10] {
            Err(Error::Input(m)) => assert_eq!(m, "the input broke at 10"),
            other => panic!("chunksize {cs}: {other:?}"),
        }
        let mut unordered: Vec<_> = pool.imap_unordered(sqr, Fragile(0)).unwrap().collect();
        assert_eq!(unordered.len(), 11);
        let failed = unordered.iter().filter(|r| matches!(r, Err(Error::Input(_)))).count();
        assert_eq!(failed, 1);
        unordered.retain(Result::is_ok);
        let mut values: Vec<i64> = unordered.into_iter().map(Result::unwrap).collect();
        values.sort_unstable();
        assert_eq!(values, expected(10));
    }
    // The pool goes on.
    assert_eq!(pool.map(sqr, 0..3).unwrap(), [0, 1, 4]);
}
