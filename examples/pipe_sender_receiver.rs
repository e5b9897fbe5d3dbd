//! Seed 003, "Pipe": a sender process sends a greeting through one end of a pipe and a receiver
//! process prints it from the other end.

use mp::Connection;

fn sender(conn: Connection) -> Result<(), mp::QueueError> {
    conn.send("Hello from the sender!")
}

fn receiver(conn: Connection) -> Result<(), mp::QueueError> {
    let data: String = conn.recv()?;
    println!("Receiver received: {data}");
    Ok(())
}

fn main() -> mp::Result<()> {
    let _guard = mp::init()?;
    let (parent_conn, child_conn) = mp::pipe(true)?;
    let mut sender_process = mp::Process::new(sender, (parent_conn,));
    let mut receiver_process = mp::Process::new(receiver, (child_conn,));

    sender_process.start()?;
    receiver_process.start()?;

    sender_process.join()?;
    receiver_process.join()?;
    Ok(())
}
