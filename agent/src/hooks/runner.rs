//! Run one script: as the right user, in its own process group, with a
//! timeout that ends in TERM to the group, a grace, then KILL. Output is
//! read line by line as it is printed. When the script exits but something
//! it started in the background still holds its stdout or stderr, the
//! output is read for a short bound more and then handed to a detached
//! drainer, so the event ends on the script's own exit and the background
//! process is never killed by a closed pipe.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::users::Account;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

pub struct Spec<'a> {
    pub program: &'a Path,
    /// `runas`, resolved; `None` runs as the agent's user.
    pub run_as: Option<&'a Account>,
    pub sudo: bool,
    pub login_shell: bool,
    /// Variables added to (or, in login-shell mode, the whole of) the environment.
    pub env: &'a [(String, String)],
    pub timeout: Duration,
    pub kill_grace: Duration,
    pub output_grace: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub exit: Exit,
    pub timed_out: bool,
    /// The last signal the agent sent to the group, if it had to.
    pub sent: Option<Signal>,
    /// A background process still held the output when the script exited.
    pub output_left_open: bool,
    pub duration: Duration,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The command that starts the script. `via_sh`: through `/bin/sh`, for a
/// script the kernel will not execute (no `#!` line), as the official agent
/// runs it (Ruby's spawn retries such a file with the shell).
fn build(spec: &Spec, via_sh: bool) -> io::Result<Command> {
    let me = nix::unistd::geteuid().as_raw();
    let target = |c: &mut Command| {
        if via_sh {
            c.arg("/bin/sh");
        }
        c.arg(spec.program);
    };
    let switch = spec.run_as.filter(|a| a.uid != me);
    let mut cmd = match (switch, me == 0, spec.sudo) {
        (Some(a), false, true) => {
            let mut c = Command::new("sudo");
            c.args(["-n", "-E", "-u", &a.name, "--"]);
            target(&mut c);
            c
        }
        (Some(a), false, false) => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                "runas {} needs the agent to run as root (it runs as uid {me}); or set sudo: true",
                a.name
            ),
            ))
        }
        (None, false, true) => {
            let mut c = Command::new("sudo");
            c.args(["-n", "-E", "--"]);
            target(&mut c);
            c
        }
        (Some(a), true, _) if spec.login_shell => {
            // The user's login shell reads their profile, then replaces
            // itself with the script.
            let mut c = Command::new(&a.shell);
            c.env_clear().env("PATH", DEFAULT_PATH);
            if let Ok(lang) = std::env::var("LANG") {
                c.env("LANG", lang);
            }
            c.args(["-l", "-c", "exec \"$0\""]).arg(spec.program);
            c
        }
        _ if via_sh => {
            let mut c = Command::new("/bin/sh");
            c.arg(spec.program);
            c
        }
        _ => Command::new(spec.program),
    };
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(a) = spec.run_as {
        cmd.env("HOME", &a.home)
            .env("USER", &a.name)
            .env("LOGNAME", &a.name)
            .env("SHELL", &a.shell);
    }
    if let (Some(a), true) = (switch, me == 0) {
        crate::sys::switch_user(&mut cmd, a.uid, a.gid, a.groups.clone());
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    Ok(cmd)
}

/// Splits a byte stream into lines, bounding a line without newline.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
}

const MAX_LINE: usize = 16 * 1024;

impl Lines {
    fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
        while let Some(i) = data.iter().position(|b| *b == b'\n') {
            if self.buf.is_empty() {
                emit(&data[..i]);
            } else {
                self.buf.extend_from_slice(&data[..i]);
                emit(&self.buf);
                self.buf.clear();
            }
            data = &data[i + 1..];
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= MAX_LINE {
            emit(&self.buf);
            self.buf.clear();
        }
    }

    fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            emit(&self.buf);
            self.buf.clear();
        }
    }
}

enum Pipe {
    Out(ChildStdout),
    Err(ChildStderr),
}

impl Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Pipe::Out(p) => p.read(buf),
            Pipe::Err(p) => p.read(buf),
        }
    }
    fn into_fd(self) -> OwnedFd {
        match self {
            Pipe::Out(p) => p.into(),
            Pipe::Err(p) => p.into(),
        }
    }
}

enum Phase {
    Running,
    /// TERM sent; KILL at the instant.
    Terminating(Instant),
    /// No further signal will be sent.
    Done,
}

pub fn run(spec: &Spec, on_line: &mut dyn FnMut(Stream, &[u8])) -> io::Result<Outcome> {
    let start = Instant::now();
    let mut child: Child = match build(spec, false)?.spawn() {
        Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => build(spec, true)?.spawn()?,
        r => r?,
    };
    let pgid = Pid::from_raw(child.id() as i32);
    let mut pipes: Vec<Output> = vec![
        (
            Stream::Stdout,
            child.stdout.take().map(Pipe::Out),
            Lines::default(),
        ),
        (
            Stream::Stderr,
            child.stderr.take().map(Pipe::Err),
            Lines::default(),
        ),
    ];
    // The waiter reaps the script and wakes the poll loop through a pipe.
    let (wake_r, wake_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let (tx, rx) = mpsc::channel::<io::Result<ExitStatus>>();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(status);
        let _ = nix::unistd::write(&wake_w, &[1]);
    });

    let mut phase = Phase::Running;
    let mut timed_out = false;
    let mut sent = None;
    let mut status: Option<ExitStatus> = None;
    let mut output_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = start + spec.timeout;
    loop {
        let now = Instant::now();
        let open = pipes.iter().filter(|p| p.1.is_some()).count();
        // After TERM, the event ends once the whole group is gone, not at
        // the end of the grace.
        if status.is_some() && matches!(phase, Phase::Terminating(_)) && group_gone(pgid) {
            phase = Phase::Done;
        }
        let settled = status.is_some() && !matches!(phase, Phase::Terminating(_));
        if settled {
            let od = *output_deadline.get_or_insert(now + spec.output_grace);
            if open == 0 || now >= od {
                break;
            }
        }
        // Timers: the script's deadline, the KILL after TERM.
        match phase {
            Phase::Running if status.is_none() && now >= deadline => {
                timed_out = true;
                let _ = killpg(pgid, Signal::SIGTERM);
                sent = Some(Signal::SIGTERM);
                phase = Phase::Terminating(now + spec.kill_grace);
                continue;
            }
            Phase::Terminating(kill_at) if now >= kill_at => {
                let _ = killpg(pgid, Signal::SIGKILL);
                sent = Some(Signal::SIGKILL);
                phase = Phase::Done;
                continue;
            }
            _ => {}
        }
        let next = match (&phase, status.is_some()) {
            // The group's end has no event to wait on: look again shortly.
            (Phase::Terminating(k), true) => (*k).min(now + GROUP_CHECK),
            (Phase::Terminating(k), false) => *k,
            (Phase::Running, false) => deadline,
            (Phase::Done, false) => now + Duration::from_secs(60),
            (_, true) => output_deadline.unwrap_or(now),
        };
        let wait_ms = next.saturating_duration_since(now).as_millis().min(60_000) as u16;
        let wake = status.is_none().then_some(&wake_r);
        let Some((ready, woken)) = wait(&pipes, wake, wait_ms)? else {
            continue;
        };
        if woken {
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&wake_r, &mut b);
            status = Some(
                rx.recv()
                    .map_err(|_| io::Error::other("waiter vanished"))??,
            );
        }
        for i in ready {
            read_some(&mut pipes[i], &mut buf, on_line);
        }
    }
    let _ = waiter.join();
    let status = status.expect("loop ends only after the script exited");
    let left_open = finish(&mut pipes, on_line);
    let exit = match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        _ => Exit::Code(-1),
    };
    Ok(Outcome {
        exit,
        timed_out,
        sent,
        output_left_open: left_open,
        duration: start.elapsed(),
    })
}

const GROUP_CHECK: Duration = Duration::from_millis(20);

/// One of the script's output streams: which, its pipe while open, its
/// partial line.
type Output = (Stream, Option<Pipe>, Lines);

/// Poll the open pipes (and the waiter's `wake` pipe) for up to `wait_ms`.
/// `None` when interrupted; else the indexes of the pipes with something
/// to read, and whether the waiter woke us.
fn wait(
    pipes: &[Output],
    wake: Option<&OwnedFd>,
    wait_ms: u16,
) -> io::Result<Option<(Vec<usize>, bool)>> {
    let mut fds: Vec<PollFd> = Vec::with_capacity(3);
    let mut which: Vec<usize> = Vec::with_capacity(3);
    for (i, (_, p, _)) in pipes.iter().enumerate() {
        if let Some(p) = p {
            let fd = match p {
                Pipe::Out(o) => o.as_fd(),
                Pipe::Err(e) => e.as_fd(),
            };
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            which.push(i);
        }
    }
    if let Some(w) = wake {
        fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
    }
    match nix::poll::poll(&mut fds, PollTimeout::from(wait_ms.max(1))) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(None),
        Err(e) => return Err(io::Error::from(e)),
    }
    let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
    let woken = wake.is_some() && fds.last().is_some_and(ready);
    let readable = which
        .iter()
        .zip(&fds)
        .filter(|(_, f)| ready(f))
        .map(|(i, _)| *i)
        .collect();
    Ok(Some((readable, woken)))
}

/// Read what one pipe has; at its end (or an error) it is closed.
fn read_some(out: &mut Output, buf: &mut [u8], on_line: &mut dyn FnMut(Stream, &[u8])) {
    let (stream, pipe, lines) = out;
    let Some(p) = pipe.as_mut() else { return };
    match p.read(buf) {
        Ok(n) if n > 0 => lines.feed(&buf[..n], |l| on_line(*stream, l)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        _ => {
            lines.finish(|l| on_line(*stream, l));
            *pipe = None;
        }
    }
}

/// Flush partial lines; a pipe still open (a background process holds it)
/// goes to the drainer. Returns whether any was.
fn finish(pipes: &mut [Output], on_line: &mut dyn FnMut(Stream, &[u8])) -> bool {
    let mut left_open = false;
    for (stream, pipe, lines) in pipes.iter_mut() {
        lines.finish(|l| on_line(*stream, l));
        if let Some(p) = pipe.take() {
            left_open = true;
            hand_to_drainer(p.into_fd());
        }
    }
    left_open
}

/// No process is left in the group (signal 0 reaches none).
fn group_gone(pgid: Pid) -> bool {
    matches!(killpg(pgid, None), Err(nix::errno::Errno::ESRCH))
}

/// Keep reading a pipe a background process still writes to, in a process
/// of its own (detached, so it outlives this command and even the agent).
/// Closing our end instead would kill the writer with SIGPIPE.
fn hand_to_drainer(fd: OwnedFd) {
    let spawned = std::env::current_exe().and_then(|exe| {
        let mut c = Command::new(exe);
        c.arg("__drain")
            .stdin(Stdio::from(fd))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.status()
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start an output drainer; a background process writing to the script's output may get SIGPIPE");
    }
}

/// The `__drain` entry point: fork a detached reader of stdin and return at
/// once, so the agent does not wait for (or have to reap) the long-lived one.
pub fn drain_main(detached: bool) -> io::Result<()> {
    if !detached {
        let mut c = Command::new(std::env::current_exe()?);
        c.arg("__drain-detached")
            .stdin(Stdio::inherit())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::sys::new_session(&mut c);
        c.spawn()?;
        return Ok(());
    }
    let mut sink = io::sink();
    let _ = io::copy(&mut io::stdin().lock(), &mut sink);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_bound() {
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut l = Lines::default();
        l.feed(b"a\nb", |x| got.push(x.to_vec()));
        l.feed(b"c\n\nd", |x| got.push(x.to_vec()));
        l.finish(|x| got.push(x.to_vec()));
        assert_eq!(
            got,
            vec![b"a".to_vec(), b"bc".to_vec(), b"".to_vec(), b"d".to_vec()]
        );
        let mut got = 0;
        let mut l = Lines::default();
        l.feed(&vec![b'x'; MAX_LINE + 10], |_| got += 1);
        assert_eq!(got, 1);
    }
}
