//! A multi-threaded process for tests and benchmarks: `threads N [--spin] [--name PREFIX]`.
//!
//! Starts N named threads (idle, or spinning with --spin), prints one line
//! `pid <pid> tids <tid> <tid> ...` and then waits until stdin closes or it is killed.

use std::io::{Read, Write};

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("usage: threads N [--spin] [--name PREFIX] [--wait-stdin]");
            std::process::exit(2);
        });
    let spin = args.iter().any(|a| a == "--spin");
    let wait_stdin = args.iter().any(|a| a == "--wait-stdin");
    let prefix = args
        .iter()
        .position(|a| a == "--name")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "worker".into());
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..n {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("{prefix}-{i}"))
            .spawn(move || {
                tx.send(gettid()).unwrap();
                if spin {
                    let mut x: u64 = 0;
                    loop {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        std::hint::black_box(x);
                    }
                } else {
                    loop {
                        std::thread::park();
                    }
                }
            })
            .expect("spawn thread");
    }
    let mut tids: Vec<u32> = (0..n).map(|_| rx.recv().unwrap()).collect();
    tids.sort();
    let line: Vec<String> = tids.iter().map(|t| t.to_string()).collect();
    println!("pid {} tids {}", std::process::id(), line.join(" "));
    std::io::stdout().flush().unwrap();
    if wait_stdin {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    } else {
        loop {
            std::thread::park();
        }
    }
}
