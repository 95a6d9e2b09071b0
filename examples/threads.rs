//! A multi-threaded process for tests and benchmarks:
//! `threads N [--spin] [--name PREFIX] [--wait-stdin] [--fork-after MS]`.
//!
//! Starts N named threads (idle, or spinning with --spin), prints one line
//! `pid <pid> tids <tid> <tid> ...` and then waits until stdin closes or it is killed. With
//! `--fork-after MS` it then forks once, MS milliseconds later, without exec (as a zygote
//! does), prints `child <pid>`, and the child waits until it is killed.

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
            eprintln!("usage: threads N [--spin] [--name PREFIX] [--wait-stdin] [--fork-after MS]");
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
    let fork_after = args
        .iter()
        .position(|a| a == "--fork-after")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    if let Some(ms) = fork_after {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        // SAFETY: the child only calls pause(2), async-signal-safe, until it is killed: no
        // allocation or lock after a fork of a multi-threaded process.
        match unsafe { libc::fork() } {
            0 => loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            },
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            child => {
                println!("child {child}");
                std::io::stdout().flush().unwrap();
            }
        }
    }
    if wait_stdin {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    } else {
        loop {
            std::thread::park();
        }
    }
}
