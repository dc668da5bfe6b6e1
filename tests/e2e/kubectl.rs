//! The real kubectl, pointed at an embedded API server.

use std::path::PathBuf;
use std::process::{Command, Output};

use certbridge_testkit::KubeSim;

/// kubectl with a kubeconfig for one [`KubeSim`].
pub struct Kubectl {
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kubectl {
    pub fn new(sim: &KubeSim) -> Kubectl {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).unwrap();
        Kubectl { kubeconfig, _dir: dir }
    }

    /// Runs kubectl with `stdin`, whatever the outcome.
    pub fn output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run kubectl ({e}): put kubectl >= 1.27 on PATH (see ./scripts/test.sh)")
            });
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and returns stdout; panics with stderr on failure.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.output(args, stdin);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fail(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.output(args, stdin);
        assert!(!out.status.success(), "kubectl {args:?} should have failed: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }
}
