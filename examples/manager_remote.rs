//! A remote manager (Python's `BaseManager(address, authkey)` with `connect()`): a manager
//! served on a TCP address with a key, and a client that reaches it knowing only the address
//! and the key, as a program started separately (or on another host) would.
//!
//! The serving side publishes a queue of jobs and a dict of results by name; the client
//! connects, looks them up, takes the jobs and writes the results. Here the client is a child
//! process for the example's sake; it is given nothing but the address.

const KEY: &[u8] = b"abracadabra";

fn client(address: String) -> mp::Result<()> {
    let manager = mp::Manager::connect(address.as_str(), Some(KEY))?;
    let jobs: mp::manager::QueueProxy<Option<u64>> = manager.lookup("jobs")?;
    let results: mp::DictProxy<u64, u64> = manager.lookup("results")?;
    while let Some(n) = jobs.get()? {
        results.insert(n, n * n)?;
    }
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let manager = mp::Manager::builder().address("127.0.0.1:0").authkey(KEY).start()?;
    let address = manager.address().expect("served on an address").to_string();
    let jobs = manager.queue::<Option<u64>>()?;
    let results = manager.dict::<u64, u64>()?;
    manager.publish("jobs", &jobs)?;
    manager.publish("results", &results)?;
    for n in 1..=5 {
        jobs.put(Some(n))?;
    }
    jobs.put(None)?;

    let mut p = mp::Process::new(client, (address,));
    p.start()?;
    println!("client exited with {}", p.join()?);
    let mut squares = results.items()?;
    squares.sort();
    println!("results: {squares:?}");
    // A wrong key reaches nothing.
    let wrong = mp::Manager::connect(manager.address().expect("an address"), Some(b"guess"));
    println!(
        "with a wrong key: {}",
        wrong.err().map_or("connected?!".to_string(), |e| e.to_string())
    );
    Ok(())
}
