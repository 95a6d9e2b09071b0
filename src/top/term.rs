//! The live view: raw terminal mode through termios, the alternate screen through ANSI
//! escapes, keys read with `poll`, and the terminal restored on every way out (q, Ctrl-C,
//! SIGTERM, SIGHUP, SIGINT, a closed terminal, an error, a panic: the guard's `Drop`).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::model::Sample;
use super::render::{self, SortKey, View};

static QUIT: AtomicBool = AtomicBool::new(false);
static RESIZED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    if sig == libc::SIGWINCH {
        RESIZED.store(true, Ordering::SeqCst);
    } else {
        QUIT.store(true, Ordering::SeqCst);
    }
}

/// Interval steps for `+` and `-`, in milliseconds.
const STEPS_MS: [u64; 9] = [250, 500, 1000, 2000, 3000, 5000, 10_000, 30_000, 60_000];

/// Raw mode and the alternate screen while alive; the saved settings back on drop.
struct Terminal {
    saved: libc::termios,
}

impl Terminal {
    fn enter() -> io::Result<Terminal> {
        // SAFETY: a zeroed termios is a valid buffer for tcgetattr to fill.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a termios we own.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // No line editing, no echo, no signals from keys (Ctrl-C and Ctrl-Z arrive as bytes:
        // Ctrl-C quits, Ctrl-Z is ignored, so the terminal is never left raw by a stop).
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        raw.c_iflag &= !(libc::IXON | libc::ICRNL);
        raw.c_cc[libc::VMIN] = 0;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: fd 0 and a termios we own.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let t = Terminal { saved };
        // A panic's message would be printed on the alternate screen and vanish with it:
        // put the terminal back first (the guard's drop then restores it once more).
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore(&saved);
            previous(info);
        }));
        // Alternate screen, cursor hidden.
        let mut out = io::stdout().lock();
        out.write_all(b"\x1b[?1049h\x1b[?25l")?;
        out.flush()?;
        Ok(t)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        restore(&self.saved);
    }
}

/// Main screen, cursor shown, attributes reset, the saved termios back. Idempotent.
fn restore(saved: &libc::termios) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(b"\x1b[0m\x1b[?25h\x1b[?1049l");
    let _ = out.flush();
    // SAFETY: fd 0 and a termios saved by `Terminal::enter`.
    unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
}

fn install_handlers() {
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGWINCH] {
        // SAFETY: a zeroed sigaction with a handler that only stores to atomics; no
        // SA_RESTART, so poll returns EINTR and the loop sees the flag at once.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Columns and rows of the terminal on stdout (80x24 when it cannot say).
fn size() -> (usize, usize) {
    // SAFETY: a zeroed winsize is a valid buffer for TIOCGWINSZ.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: fd 1 and a winsize we own.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
        (ws.ws_col as usize, ws.ws_row as usize)
    } else {
        (80, 24)
    }
}

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Quit,
    Sort(SortKey),
    NextSort,
    Up,
    Down,
    Expand,
    ExpandRow(usize),
    Slower,
    Faster,
}

/// Keys in a chunk of terminal input; unknown bytes and escape sequences are skipped.
pub fn keys(buf: &[u8]) -> Vec<Key> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < buf.len() {
        let b = buf[i];
        i += 1;
        out.push(match b {
            b'q' | b'Q' | 0x03 | 0x04 => Key::Quit,
            b'c' => Key::Sort(SortKey::Cpu),
            b'p' => Key::Sort(SortKey::Pressure),
            b't' => Key::Sort(SortKey::Threads),
            b'n' => Key::Sort(SortKey::Name),
            b's' => Key::NextSort,
            b'k' => Key::Up,
            b'j' => Key::Down,
            b'\r' | b'\n' | b'e' => Key::Expand,
            b'1'..=b'9' => Key::ExpandRow((b - b'0') as usize),
            b'+' | b'=' => Key::Slower,
            b'-' | b'_' => Key::Faster,
            0x1b => {
                // CSI or SS3 arrows: ESC [ A, ESC O B; anything else after ESC is dropped.
                if i + 1 < buf.len() && (buf[i] == b'[' || buf[i] == b'O') {
                    let k = buf[i + 1];
                    i += 2;
                    match k {
                        b'A' => Key::Up,
                        b'B' => Key::Down,
                        _ => {
                            // Skip the rest of a longer sequence (parameters, then a final byte).
                            while i < buf.len() && !(0x40..=0x7e).contains(&buf[i - 1]) {
                                i += 1;
                            }
                            continue;
                        }
                    }
                } else {
                    continue;
                }
            }
            _ => continue,
        });
    }
    out
}

/// Steps the interval along [`STEPS_MS`].
pub fn step(interval: Duration, slower: bool) -> Duration {
    let ms = interval.as_millis() as u64;
    let next = if slower {
        STEPS_MS.iter().copied().find(|&s| s > ms).unwrap_or(ms)
    } else {
        STEPS_MS
            .iter()
            .rev()
            .copied()
            .find(|&s| s < ms)
            .unwrap_or(ms)
    };
    Duration::from_millis(next)
}

/// Applies a key to the view; false for quit.
pub fn apply(key: Key, sample: Option<&Sample>, view: &mut View, interval: &mut Duration) -> bool {
    let rows = sample.map_or(0, |s| s.groups.len());
    let path_at = |view: &View, n: usize| -> Option<String> {
        let s = sample?;
        let ord = render::order(&s.groups, view.sort);
        ord.get(n).map(|&i| s.groups[i].path.clone())
    };
    let toggle = |view: &mut View, path: String| {
        if !view.expanded.remove(&path) {
            view.expanded.insert(path);
        }
    };
    match key {
        Key::Quit => return false,
        Key::Sort(k) => view.sort = k,
        Key::NextSort => view.sort = view.sort.next(),
        Key::Up => view.selected = view.selected.saturating_sub(1),
        Key::Down => view.selected = (view.selected + 1).min(rows.saturating_sub(1)),
        Key::Expand => {
            if let Some(p) = path_at(view, view.selected) {
                toggle(view, p);
            }
        }
        Key::ExpandRow(n) => {
            if let Some(p) = path_at(view, n - 1) {
                view.selected = n - 1;
                toggle(view, p);
            }
        }
        Key::Slower => *interval = step(*interval, true),
        Key::Faster => *interval = step(*interval, false),
    }
    true
}

fn draw(sample: Option<&Sample>, view: &mut View, status: &str) -> io::Result<()> {
    let (w, h) = size();
    let (lines, sel) = render::screen(sample, view, status, w, h);
    let mut buf = String::from("\x1b[H");
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            buf.push_str("\r\n");
        }
        if Some(i) == sel {
            buf.push_str("\x1b[7m");
            buf.push_str(l);
            buf.push_str("\x1b[0m");
        } else {
            buf.push_str(l);
        }
        buf.push_str("\x1b[K");
    }
    buf.push_str("\x1b[J");
    let mut out = io::stdout().lock();
    out.write_all(buf.as_bytes())?;
    out.flush()
}

/// Runs the live view until a quit key, a signal or a closed terminal. `snapshot` reads the
/// tree; `build` turns the previous and the current reading into a sample.
pub fn run<S>(
    mut interval: Duration,
    mut snapshot: impl FnMut() -> S,
    mut build: impl FnMut(&S, &S) -> Sample,
) -> io::Result<()> {
    QUIT.store(false, Ordering::SeqCst);
    install_handlers();
    let _term = Terminal::enter()?;
    let mut view = View::default();
    let mut sample: Option<Sample> = None;
    let mut prev = snapshot();
    let mut next = Instant::now() + interval;
    let mut status = String::new();
    draw(None, &mut view, &status)?;
    loop {
        // Wait for the next reading, handling keys and signals meanwhile.
        loop {
            if QUIT.load(Ordering::SeqCst) {
                return Ok(());
            }
            if RESIZED.swap(false, Ordering::SeqCst) {
                draw(sample.as_ref(), &mut view, &status)?;
            }
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut pfd = libc::pollfd {
                fd: libc::STDIN_FILENO,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one pollfd we own.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                continue;
            }
            if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
                && pfd.revents & libc::POLLIN == 0
            {
                return Ok(());
            }
            let mut buf = [0u8; 64];
            // SAFETY: reading into a buffer we own, at most its length.
            let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                // The terminal is gone.
                return Ok(());
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) {
                    continue;
                }
                return Err(e);
            }
            let before = interval;
            for key in keys(&buf[..n as usize]) {
                if !apply(key, sample.as_ref(), &mut view, &mut interval) {
                    return Ok(());
                }
            }
            if interval != before {
                status = format!("interval {:.2} s", interval.as_secs_f64());
                next = Instant::now() + interval;
            }
            draw(sample.as_ref(), &mut view, &status)?;
        }
        let cur = snapshot();
        sample = Some(build(&prev, &cur));
        prev = cur;
        next = Instant::now() + interval;
        draw(sample.as_ref(), &mut view, &status)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_arrows() {
        assert_eq!(
            keys(b"q\x1b[A\x1b[Bx3\r+-s\x1b[1;5C\x1bOAc"),
            vec![
                Key::Quit,
                Key::Up,
                Key::Down,
                Key::ExpandRow(3),
                Key::Expand,
                Key::Slower,
                Key::Faster,
                Key::NextSort,
                Key::Up,
                Key::Sort(SortKey::Cpu)
            ]
        );
        assert_eq!(keys(b"\x1b"), vec![]);
        assert_eq!(keys(b"\x03"), vec![Key::Quit]);
    }

    #[test]
    fn interval_steps_stop_at_the_ends() {
        let s = |ms| Duration::from_millis(ms);
        assert_eq!(step(s(1000), true), s(2000));
        assert_eq!(step(s(1000), false), s(500));
        assert_eq!(step(s(1500), false), s(1000));
        assert_eq!(step(s(250), false), s(250));
        assert_eq!(step(s(60_000), true), s(60_000));
    }
}
