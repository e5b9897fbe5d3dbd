//! Many processes count words into one dict the manager holds, with `update_with`: the
//! increment runs in the manager with the dict held, so no update is lost. Python's
//! `d[k] = d.get(k, 0) + 1` from several processes loses some without a `Lock`.

const WORDS: [&str; 4] = ["apple", "banana", "cherry", "apple"];
const ROUNDS: u64 = 250;

fn count_words(counts: mp::DictProxy<String, u64>) -> Result<(), mp::ManagerError> {
    for _ in 0..ROUNDS {
        for word in WORDS {
            counts.update_with(&word.to_string(), |n: Option<u64>| n.unwrap_or(0) + 1)?;
        }
    }
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let manager = mp::Manager::start()?;
    let counts: mp::DictProxy<String, u64> = manager.dict()?;
    let mut processes: Vec<mp::Process> =
        (0..4).map(|_| mp::Process::new(count_words, (counts.clone(),))).collect();
    for p in &mut processes {
        p.start()?;
    }
    for p in &processes {
        assert_eq!(p.join()?, 0, "a counting process failed");
    }
    let mut totals = counts.items()?;
    totals.sort();
    for (word, n) in &totals {
        println!("{word}: {n}");
    }
    println!("total: {}", totals.iter().map(|(_, n)| n).sum::<u64>());
    Ok(())
}
