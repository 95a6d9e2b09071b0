//! The live view: raw terminal mode through termios, the alternate screen through ANSI
//! escapes, keys read with `poll`, and the terminal restored on every way out (q, Ctrl-C,
//! SIGTERM, SIGHUP, SIGINT, a closed terminal, an error, a panic: the guard's `Drop`).

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::termios::{InputModes, LocalModes, OptionalActions, SpecialCodeIndex, Termios};

use super::model::Sample;
use super::render::{self, SortKey, View};
use crate::sys;

/// The signals that end the view; SIGWINCH redraws it.
const QUIT_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGHUP, libc::SIGINT];

fn quit_requested() -> bool {
    QUIT_SIGNALS.iter().any(|&s| sys::signal_caught(s))
}

/// Interval steps for `+` and `-`, in milliseconds.
const STEPS_MS: [u64; 9] = [250, 500, 1000, 2000, 3000, 5000, 10_000, 30_000, 60_000];

/// Raw mode and the alternate screen while alive; the saved settings back on drop.
struct Terminal {
    saved: Termios,
}

impl Terminal {
    fn enter() -> io::Result<Terminal> {
        let saved = rustix::termios::tcgetattr(io::stdin())?;
        let mut raw = saved.clone();
        // No line editing, no echo, no signals from keys (Ctrl-C and Ctrl-Z arrive as bytes:
        // Ctrl-C quits, Ctrl-Z is ignored, so the terminal is never left raw by a stop).
        raw.local_modes -=
            LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG | LocalModes::IEXTEN;
        raw.input_modes -= InputModes::IXON | InputModes::ICRNL;
        raw.special_codes[SpecialCodeIndex::VMIN] = 0;
        raw.special_codes[SpecialCodeIndex::VTIME] = 0;
        rustix::termios::tcsetattr(io::stdin(), OptionalActions::Now, &raw)?;
        let t = Terminal {
            saved: saved.clone(),
        };
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
fn restore(saved: &Termios) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(b"\x1b[0m\x1b[?25h\x1b[?1049l");
    let _ = out.flush();
    let _ = rustix::termios::tcsetattr(io::stdin(), OptionalActions::Now, saved);
}

fn install_handlers() {
    for sig in QUIT_SIGNALS.into_iter().chain([libc::SIGWINCH]) {
        let _ = sys::catch_signal(sig);
    }
}

/// Columns and rows of the terminal on stdout (80x24 when it cannot say).
fn size() -> (usize, usize) {
    match rustix::termios::tcgetwinsize(io::stdout()) {
        Ok(ws) if ws.ws_col > 0 && ws.ws_row > 0 => (ws.ws_col as usize, ws.ws_row as usize),
        _ => (80, 24),
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
    for sig in QUIT_SIGNALS {
        sys::take_signal(sig);
    }
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
            if quit_requested() {
                return Ok(());
            }
            if sys::take_signal(libc::SIGWINCH) {
                draw(sample.as_ref(), &mut view, &status)?;
            }
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let stdin = io::stdin();
            let mut pfd = [PollFd::new(&stdin, PollFlags::IN)];
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i64;
            let wait = Timespec {
                tv_sec: ms / 1000,
                tv_nsec: ms % 1000 * 1_000_000,
            };
            match rustix::event::poll(&mut pfd, Some(&wait)) {
                Ok(0) | Err(Errno::INTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            let revents = pfd[0].revents();
            if revents.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL)
                && !revents.contains(PollFlags::IN)
            {
                return Ok(());
            }
            let mut buf = [0u8; 64];
            let n = match rustix::io::read(stdin.as_fd(), &mut buf) {
                // The terminal is gone.
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(Errno::INTR | Errno::AGAIN) => continue,
                Err(e) => return Err(e.into()),
            };
            let before = interval;
            for key in keys(&buf[..n]) {
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
