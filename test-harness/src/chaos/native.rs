//! The native backend: each upstream is a process of its own (`fusebox-harness upstream`), so a
//! crash is a real `SIGKILL` (connections reset, port refused) and a restart a new process on
//! the same port; the other faults are switched through the upstream's control endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use crate::upstream::Fault;

/// What an upstream process prints first: where it listens.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Announcement {
    /// Traffic.
    pub listen: SocketAddr,
    /// Control endpoint.
    pub control: SocketAddr,
}

/// An upstream process under the runner's control.
pub struct UpstreamProcess {
    exe: PathBuf,
    /// Its name in the topology.
    pub name: String,
    addrs: Announcement,
    child: Option<Child>,
    /// Hits counted by processes that have since been killed.
    hits_before: u64,
    /// Hits the current process last reported.
    last_hits: u64,
}

fn spawn(
    exe: &Path,
    listen: SocketAddr,
    control: SocketAddr,
) -> Result<(Child, Announcement), String> {
    let mut child = Command::new(exe)
        .args(["upstream", "--listen", &listen.to_string()])
        .args(["--control", &control.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting upstream {}: {e}", exe.display()))?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    match serde_json::from_str::<Announcement>(line.trim()) {
        Ok(announcement) => Ok((child, announcement)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "upstream on {listen} did not start (it said {line:?})"
            ))
        }
    }
}

impl UpstreamProcess {
    /// Starts an upstream on free loopback ports.
    pub fn start(exe: &Path, name: &str) -> Result<UpstreamProcess, String> {
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        let (child, addrs) = spawn(exe, any, any)?;
        Ok(UpstreamProcess {
            exe: exe.to_owned(),
            name: name.to_owned(),
            addrs,
            child: Some(child),
            hits_before: 0,
            last_hits: 0,
        })
    }

    /// Where it serves traffic.
    pub fn addr(&self) -> SocketAddr {
        self.addrs.listen
    }

    /// Kills the process (`SIGKILL`: no goodbye to open connections).
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.hits_before += self.last_hits;
        self.last_hits = 0;
    }

    /// Starts a new process on the same ports.
    pub fn restart(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        // A port can stay busy for a moment after a kill; retry briefly.
        let mut last_error = String::new();
        for _ in 0..50 {
            match spawn(&self.exe, self.addrs.listen, self.addrs.control) {
                Ok((child, _)) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) => last_error = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last_error)
    }

    /// Switches a fault on or off through the control endpoint.
    pub fn set_fault(&self, fault: Option<Fault>) -> Result<(), String> {
        let (method, body) = match fault {
            Some(fault) => (
                "PUT",
                serde_json::to_string(&fault).map_err(|e| e.to_string())?,
            ),
            None => ("DELETE", String::new()),
        };
        let (status, answer) = control_request(self.addrs.control, method, "/fault", &body)
            .map_err(|e| format!("upstream {}: control endpoint: {e}", self.name))?;
        if status == 200 {
            Ok(())
        } else {
            Err(format!(
                "upstream {}: control endpoint said {status} {answer}",
                self.name
            ))
        }
    }

    /// Requests received by every process of this upstream so far (a down upstream counts
    /// what it had).
    pub fn hits(&mut self) -> u64 {
        if self.child.is_some() {
            let reported = control_request(self.addrs.control, "GET", "/stats", "")
                .ok()
                .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                .and_then(|stats| stats.get("hits")?.as_u64());
            if let Some(hits) = reported {
                self.last_hits = hits;
            }
        }
        self.hits_before + self.last_hits
    }
}

impl Drop for UpstreamProcess {
    fn drop(&mut self) {
        self.crash();
    }
}

/// One request to a control endpoint: status and body.
fn control_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: control\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let response = crate::client::parse_response(&raw)?;
    Ok((
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    ))
}
